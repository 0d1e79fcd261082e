"""What the pages share: the navigation, the sidebar, the pickers and the views too long for one page file.

A package rather than files beside the pages: Streamlit's legacy pages/-folder mode lists every
`pages/*.py` as a page, never what lies in a folder below (see `navigation`).
"""
