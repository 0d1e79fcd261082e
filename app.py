"""AlexNet Lab: the entry file only routes and draws the sidebar; pages are thin views over `alexnet/`."""
import streamlit as st

from pages.common import sidebar

st.set_page_config(page_title="AlexNet Lab", page_icon="🧠", layout="wide")

navigation = st.navigation([
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/train.py", title="Train", icon="🏋️"),
    st.Page("pages/predict.py", title="Predict", icon="🔮"),
    st.Page("pages/explain.py", title="Explain", icon="🔍"),
    st.Page("pages/compare.py", title="Compare", icon="⚖️"),
])
sidebar()
navigation.run()
