"""AlexNet Lab: the entry file only routes and draws the sidebar; pages are thin views over `alexnet/`."""
from pathlib import Path

import streamlit as st

from pages.common import sidebar

# A file, not a Material icon: those come from Google's font servers, which an offline classroom lacks.
ICON = Path(__file__).resolve().parent / "assets" / "icon.png"  # 16 of the demo model's conv1 kernels
st.set_page_config(page_title="AlexNet Lab", page_icon=str(ICON), layout="wide")

navigation = st.navigation([
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
    st.Page("pages/explain.py", title="Explain", icon=":material/visibility:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
])
sidebar()
navigation.run()
