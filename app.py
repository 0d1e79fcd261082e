"""AlexNet Lab: the entry file only routes and draws the sidebar; pages are thin views over `alexnet/`."""
import streamlit as st

from pages.common import sidebar

st.set_page_config(page_title="AlexNet Lab", page_icon=":material/neurology:", layout="wide")

navigation = st.navigation([
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
    st.Page("pages/explain.py", title="Explain", icon=":material/visibility:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
])
sidebar()
navigation.run()
