"""The ImageNet model in a real browser: pick it on Predict, upload a photo, read its five class names, then see
Grad-CAM at 224x224 on Explain.

The server gets its own $TORCH_HOME holding torchvision's AlexNet with random weights where the download
would put them (the shared `app_server` fixture is left as it is).
"""
from __future__ import annotations

import os
import re

import pytest
import torch
from torchvision.models import alexnet

from alexnet import imagenet
from alexnet.images import load_image
from alexnet.predict import EXAMPLES_DIR, predict
from conftest import metric_value, nav_link, screenshot, serve_app, wait_for_app
from pages._shared import model_picker

CAT = EXAMPLES_DIR / "chelsea.png"


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    torch.manual_seed(2)
    home = tmp_path_factory.mktemp("browser-torch-home")
    hub = home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    hub.parent.mkdir(parents=True)
    torch.save(alexnet(weights=None).state_dict(), hub)
    return home


@pytest.fixture(scope="module")
def imagenet_server(tmp_path_factory, mini_dir, torch_home):
    """The app as `app_server` serves it, with TORCH_HOME pointing at the random-weights hub."""
    with serve_app(tmp_path_factory, "imagenet-server", ALEXNET_DATA=str(mini_dir), TORCH_HOME=str(torch_home)) as url:
        yield url


def test_pick_the_imagenet_model_upload_a_photo_see_five_names_and_grad_cam(imagenet_server, page, torch_home):
    os.environ["TORCH_HOME"], before = str(torch_home), os.environ.get("TORCH_HOME")
    try:
        model = imagenet.load_pretrained()
    finally:
        if before is None:
            del os.environ["TORCH_HOME"]
        else:
            os.environ["TORCH_HOME"] = before
    expected = predict(model, load_image(CAT))

    page.set_viewport_size({"width": 1400, "height": 2400})
    page.goto(imagenet_server)
    wait_for_app(page)
    nav_link(page, "Predict").click()
    wait_for_app(page)
    page.locator(".st-key-predict_model button[aria-label=Open]").click()
    page.get_by_role("option", name=model_picker.IMAGENET).click()
    wait_for_app(page)
    page.locator("[data-testid=stRadio] label").filter(has_text=re.compile(r"^Upload$")).click()
    wait_for_app(page)
    page.locator("[data-testid=stFileUploader] input[type=file]").first.set_input_files([str(CAT)])
    page.get_by_text("top 5 of 1000 classes").wait_for()
    wait_for_app(page)

    assert metric_value(page, "Predicted") == expected.label
    assert page.locator("[data-testid=stException]").count() == 0
    chart = page.locator("[data-testid=stPlotlyChart]").filter(has=page.locator("g.barlayer")).first
    names = [t.strip() for t in chart.locator("g.ytick text").all_text_contents()]
    assert sorted(names) == sorted(name for name, _ in expected.top(5))
    screenshot(page, "predict-imagenet")

    nav_link(page, "Explain").click()
    wait_for_app(page)
    page.get_by_text(f"Grad-CAM (conv5, class {expected.label})", exact=True).wait_for()
    assert metric_value(page, "Predicted") == expected.label
    maps = page.locator("[data-testid=stPlotlyChart]").filter(has=page.locator("g.heatmaplayer image, g.hm image"))
    maps.first.wait_for()
    assert maps.count() >= 1
    assert page.locator("[data-testid=stException]").count() == 0
    screenshot(page, "explain-imagenet-grad-cam")
