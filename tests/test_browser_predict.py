"""Predict and Explain in a real browser: upload files, read the top class and the chart, then see Grad-CAM."""
from __future__ import annotations

import re

from PIL import Image

from alexnet.checkpoints import load_model
from alexnet.data import CIFAR10_CLASSES
from alexnet.images import load_image
from alexnet.predict import DEMO_WEIGHTS, EXAMPLES_DIR, predict
from conftest import metric_value, nav_link, screenshot, wait_for_app


def test_upload_on_predict_then_grad_cam_on_explain(app_server, page, tmp_path, mini_data):
    truck = tmp_path / "truck.png"
    Image.fromarray(mini_data.test_x[11].permute(1, 2, 0).numpy()).resize((96, 96)).save(truck)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((EXAMPLES_DIR / "coffee.jpg").read_bytes()[:3000])
    expected = predict(load_model(DEMO_WEIGHTS), load_image(truck))

    page.set_viewport_size({"width": 1400, "height": 2400})       # Streamlit scrolls inside: a tall view shows all
    page.goto(app_server)
    wait_for_app(page)
    nav_link(page, "Predict").click()
    wait_for_app(page)
    assert metric_value(page, "Predicted")                       # the demo model and the cat example at once
    page.locator("[data-testid=stRadio] label").filter(has_text=re.compile(r"^Upload$")).click()
    wait_for_app(page)
    page.locator("[data-testid=stFileUploader] input[type=file]").first.set_input_files([str(truck), str(broken)])
    page.get_by_text("broken.jpg is truncated").wait_for()
    wait_for_app(page)

    assert metric_value(page, "Predicted") == expected.label
    assert metric_value(page, "Top probability") == f"{expected.confidence:.1%}"
    assert page.locator("[data-testid=stException]").count() == 0
    bars = page.locator("[data-testid=stPlotlyChart]").filter(has=page.locator("g.barlayer"))
    bars.first.wait_for()
    assert bars.count() == 1
    assert bars.first.locator("g.ytick").filter(has_text=expected.label).count() == 1
    screenshot(page, "predict-upload")

    nav_link(page, "Explain").click()
    wait_for_app(page)
    page.get_by_text(f"Grad-CAM (conv5, class {expected.label})", exact=True).wait_for()
    checked = page.locator("[data-testid=stRadio] input:checked").first
    assert checked.evaluate("e => e.closest('label').innerText").strip() == "The Predict page's image"
    assert metric_value(page, "Predicted") == expected.label
    maps = page.locator("[data-testid=stPlotlyChart]").filter(has=page.locator("g.heatmaplayer image, g.hm image"))
    maps.first.wait_for()
    assert maps.count() >= 2                                      # Grad-CAM and Integrated Gradients overlays
    assert page.locator("[data-testid=stException]").count() == 0
    screenshot(page, "explain-grad-cam")


def _explain_box(pg) -> str:
    """What the 'Class to explain' box of the open tab and the caption under it say, as the browser shows them.

    The Methods tab has a box of the same name: it is in the page but hidden until its tab is opened."""
    box = pg.locator("[data-testid=stColumn]").filter(
        has=pg.locator("[data-testid=stSelectbox]").filter(has_text="Class to explain")).filter(visible=True)
    assert box.count() == 1
    return box.locator("input[role=combobox]").input_value() + "\n" + box.inner_text()


def test_explain_class_box_names_the_current_prediction_after_switching_images(app_server, page, mini_data):
    """The box's 'predicted class' option must not keep the label of the image it was first shown for."""
    demo = load_model(DEMO_WEIGHTS)
    steps = [("chelsea.png", predict(demo, load_image(EXAMPLES_DIR / "chelsea.png")).label),
             ("#0", predict(demo, mini_data.test_x[0].permute(1, 2, 0).numpy()).label),
             ("astronaut.jpg", predict(demo, load_image(EXAMPLES_DIR / "astronaut.jpg")).label)]
    assert len({label for _, label in steps}) == 3                # frog, cat, truck: each switch changes the answer

    page.set_viewport_size({"width": 1400, "height": 2400})
    page.goto(app_server)
    wait_for_app(page)
    nav_link(page, "Explain").click()
    wait_for_app(page)
    radio = page.locator("[data-testid=stRadio]").filter(has_text="Test-set gallery")
    for image, label in steps:
        if image == "#0":
            radio.locator("label").filter(has_text=re.compile(r"^Test-set gallery$")).click()
        elif image != "chelsea.png":
            radio.locator("label").filter(has_text=re.compile(r"^Examples$")).click()
            wait_for_app(page)
            page.locator("[data-testid=stSelectbox]").filter(has_text="Example").first.click()
            page.get_by_role("option").filter(has_text=image).click()
        wait_for_app(page)
        page.get_by_text(f"Grad-CAM (conv5, class {label})", exact=True).wait_for()
        assert metric_value(page, "Predicted") == label
        text = _explain_box(page)
        named = {c for c in CIFAR10_CLASSES if re.search(rf"\b{c}\b", text)}
        assert named == {label}, f"after {image} the class box reads {text!r}; the model predicts {label}"
    assert page.locator("[data-testid=stException]").count() == 0
    screenshot(page, "explain-class-box")
