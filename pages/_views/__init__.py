"""Views too long for a page script, each a module with `render()` that a page calls in one line.

A package, not files beside the pages: with st.navigation in app.py, only what app.py lists is a
page, and Streamlit's legacy pages/-folder mode never lists a folder below pages/.
"""
