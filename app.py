"""AlexNet Lab: the entry file only routes and draws the sidebar; pages are thin views over `alexnet/`.

The pages, their order and icons are listed in `pages/_shared/navigation.py`, where a page script
opened by its own URL on a fresh server finds its way back through this navigation.
"""
from pages._shared.navigation import run_app

run_app()
