"""A fresh machine, as the README's first command leaves it: no dataset named, none in the usual places,
no runs, offline. Every page must open, say what it uses, and work on the embedded sample."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from conftest import open_app_page

PAGES = ["pages/home.py", "pages/train.py", "pages/predict.py", "pages/explain.py", "pages/compare.py"]
SAMPLE_LABEL = "embedded sample (2,972 images)"


def texts(at: AppTest) -> str:
    return "\n".join(e.value for kind in ("subheader", "caption", "markdown", "info", "warning") for e in at.get(kind))


@pytest.mark.parametrize("page", [None, "pages/train.py"])
def test_the_sidebar_names_the_embedded_sample(empty_machine, page):
    sidebar = "\n".join(c.value for c in open_app_page(page).sidebar.caption)
    assert f"**Dataset:** {SAMPLE_LABEL}" in sidebar and "missing" not in sidebar


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_on_an_empty_machine(empty_machine, page):
    at = open_app_page(page)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_the_train_page_and_the_gallery_use_the_sample_and_a_folder_named_in_the_app_wins(empty_machine, mini_dir):
    at = open_app_page("pages/train.py")
    assert f"On {SAMPLE_LABEL}: 1,800 training images" in texts(at)            # 90% of 2,000; 10% validation
    at.session_state["data_dir"] = str(mini_dir)                               # the sidebar's Dataset folder
    at.run()
    assert "On CIFAR-10 subset (6,102 images): 4,577 training images" in texts(at)  # 5,085 less 508 held out
    at = open_app_page("pages/predict.py")
    at.radio(key="predict_source").set_value("Test-set gallery").run()
    assert not at.exception, at.exception
    tiles = at.get("image")[0].proto.imgs                                      # the gallery's tiles, lossless
    assert len(tiles) > 1 and all(t.url.endswith(".png") for t in tiles)
    assert f"test image #0 of {SAMPLE_LABEL}" in texts(at)


def test_explain_methods_and_their_sanity_check_work_on_the_embedded_sample(empty_machine):
    at = open_app_page("pages/explain.py")
    at.radio(key="explain_source").set_value("Test-set gallery").run()
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert f"test image #0 of {SAMPLE_LABEL}" in captions
    for name in ("Score-CAM", "SmoothGrad"):                 # one without gradients, one through captum
        at.selectbox(key="methods_method").select(name).run()
        assert not at.exception, at.exception
        assert [e.proto.id.rsplit("-", 1)[-1] for e in at.get("plotly_chart")].count("methods_map") == 1
        assert any(v.startswith(f"{name} d") for v in [s.value for s in at.success] + [w.value for w in at.warning])
