"""AlexNet Lab: AlexNet variants on CIFAR-10, with run records and explanations (no Streamlit here)."""
__version__ = "0.1.0"
