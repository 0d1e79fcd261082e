"""The Predict and Explain pages in Streamlit's AppTest: the demo model, examples, the gallery, uploads, two models.

AppTest runs the pages in this process, so what they show is compared with the library's own answers.
"""
from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from alexnet import attributions, explain, runs
from alexnet.checkpoints import load_model
from alexnet.data import CIFAR10_CLASSES
from alexnet.images import load_image, to_cifar_array
from alexnet.inputs import SHOWN_SIZE, model_image
from alexnet.models import build
from alexnet.predict import DEMO_WEIGHTS, EXAMPLES_DIR, predict
from alexnet.weight_files import save_weights
from pages._shared import image_picker, model_picker

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")   # captum's per-call notice


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_WEIGHTS)


@pytest.fixture
def app(runs_dir, mini_dir, monkeypatch):
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.switch_page("pages/predict.py")
    at.run()
    assert not at.exception, at.exception
    return at


def figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def chart(at, key: str) -> dict:
    """The figure of the chart drawn with this key (an element's id ends with its key)."""
    (found,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    return found


def array(value) -> np.ndarray:
    """A plotly JSON array: a list, or plotly 6's typed array {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape)
    return np.asarray(value)


def bar_charts(at) -> list[dict]:
    return [f for f in figures(at) if f["data"] and f["data"][0]["type"] == "bar"]


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid PNG header announcing 900 megapixels, with a few rows of data: refused before decoding."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(bytes(1 + (width + 7) // 8) * 10)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def metric(at, label: str) -> list[str]:
    return [m.value for m in at.metric if m.label == label]


# ---- Predict ----

def test_predict_opens_on_the_demo_model_and_the_cat_example(app, demo):
    assert app.selectbox(key="predict_model").value.startswith("demo")
    expected = predict(demo, load_image(EXAMPLES_DIR / "chelsea.png"))
    assert metric(app, "Predicted") == [expected.label]
    assert metric(app, "Top probability") == [f"{expected.confidence:.1%}"]
    bars = bar_charts(app)
    assert len(bars) == 1
    trace = bars[0]["data"][0]
    assert len(array(trace["x"])) == 10 and array(trace["x"]).sum() == pytest.approx(1.0, abs=1e-5)
    assert "cat (true)" in trace["y"]                                     # the example's known class
    assert any("only CIFAR-10's ten classes" in c.value for c in app.caption)


def test_predict_shows_the_32px_input_and_for_a_paper_model_the_227px_one(app, runs_dir):
    torch.manual_seed(0)
    writer = runs.RunWriter.create(runs_dir, "paper-run", {"variant": "paper", "norm": "lrn", "epochs": 1})
    save_weights(writer.path / "weights.safetensors", build("paper", "lrn"))
    writer.set_status("stopped", epoch=0, checkpoint=True)
    app.run()
    images = [f for f in figures(app) if f["data"] and f["data"][0]["type"] == "image"]
    assert [f["layout"]["title"]["text"] for f in images] == ["what the network sees: 32x32"]
    second = app.selectbox(key="predict_model_2")
    second.select(next(o for o in second.options if o.startswith("paper-run"))).run()
    assert not app.exception
    views = {f["layout"]["title"]["text"]: array(f["data"][0]["z"])
             for f in figures(app) if f["data"] and f["data"][0]["type"] == "image"}
    assert list(views) == ["what the network sees: 32x32", "upsampled to 227x227 for the paper variant"]
    photo = load_image(EXAMPLES_DIR / "chelsea.png")                     # the example the page opens on
    assert np.array_equal(views["what the network sees: 32x32"], model_image(photo, build("cifar", "bn")).pixels)
    paper = model_image(photo, build("paper", "lrn"))                    # the library's 227x227 input, as a picture
    assert np.array_equal(views["upsampled to 227x227 for the paper variant"], paper.seen())
    assert len(bar_charts(app)) == 2 and len(metric(app, "Predicted")) == 2


def test_uploads_several_files_and_bad_ones_get_a_message_each(app, demo, mini_data):
    app.radio(key="predict_source").set_value("Upload").run()
    good = mini_data.test_x[3].permute(1, 2, 0).numpy()
    cat = (EXAMPLES_DIR / "chelsea.png").read_bytes()
    app.file_uploader(key="predict_upload").set_value([
        ("plane.png", png(good), "image/png"),
        ("notes.txt", b"this is not an image at all", "text/plain"),
        ("broken.png", cat[:len(cat) // 2], "image/png"),
        ("bomb.png", png_bomb(), "image/png"),
        ("cat.png", cat, "image/png"),
    ]).run()
    assert not app.exception, app.exception
    errors = [e.value for e in app.error]
    assert len(errors) == 3
    assert "notes.txt is not an image" in errors[0]
    assert "broken.png is truncated" in errors[1]
    assert errors[2].startswith("bomb.png is far too large") and "refused" in errors[2]
    closer = app.selectbox(key="predict_closer")
    assert closer.options == ["plane.png", "cat.png"]
    assert metric(app, "Predicted") == [predict(demo, good).label]
    closer.select(1).run()
    assert metric(app, "Predicted") == [predict(demo, load_image(cat)).label]
    assert app.session_state[image_picker.CURRENT_IMAGE].name == "cat.png"


def test_the_gallery_shows_test_images_with_their_true_labels(app, demo, mini_data):
    app.radio(key="predict_source").set_value("Test-set gallery").run()
    app.selectbox(key="predict_gallery_class").select("ship").run()
    picked = app.selectbox(key="predict_gallery_image")
    third = int(picked.options[2].split()[0].lstrip("#"))           # options read "#12 (ship)"
    picked.select(third).run()
    assert not app.exception
    chosen = app.session_state[image_picker.CURRENT_IMAGE]
    number = int(chosen.name.split("#")[1].split()[0])
    assert number == third
    assert int(mini_data.test_y[number]) == CIFAR10_CLASSES.index("ship") == chosen.true_label
    expected = predict(demo, mini_data.test_x[number].permute(1, 2, 0).numpy())
    assert metric(app, "Predicted") == [expected.label]
    verdict = "right" if expected.label == "ship" else "wrong"
    assert any(c.value == f"The image shows a ship: the model is {verdict}." for c in app.caption)


def test_an_uploaded_checkpoint_is_checked_against_the_chosen_variant(app):
    model_box = app.selectbox(key="predict_model")
    model_box.select(model_picker.UPLOAD_CHECKPOINT).run()
    uploader = app.file_uploader(key="predict_model_file")
    uploader.upload("junk.safetensors", b"\x00" * 64).run()
    assert any("junk.safetensors is not a valid safetensors file" in e.value for e in app.error)
    assert not metric(app, "Predicted")

    app.file_uploader(key="predict_model_file").set_value(
        ("mine.safetensors", DEMO_WEIGHTS.read_bytes(), "application/octet-stream")).run()
    app.selectbox(key="predict_model_variant").select("paper").run()
    errors = [e.value for e in app.error]
    assert any("does not fit the paper variant" in e and "wrong shapes" in e for e in errors), errors

    app.selectbox(key="predict_model_variant").select("detect").run()
    assert not app.error and not app.exception
    assert len(metric(app, "Predicted")) == 1
    assert any("mine.safetensors: cifar variant, norm bn" in c.value for c in app.caption)


# ---- Explain ----

def test_explain_follows_the_predict_pages_image_and_draws_grad_cam(app, demo, mini_data, monkeypatch):
    calls = []
    original = explain.grad_cam
    monkeypatch.setattr(explain, "grad_cam", lambda *a, **k: calls.append(a[2:]) or original(*a, **k))
    app.radio(key="predict_source").set_value("Test-set gallery").run()
    chosen = app.session_state[image_picker.CURRENT_IMAGE]
    app.switch_page("pages/explain.py").run()
    assert not app.exception, app.exception
    assert app.radio(key="explain_source").value == image_picker.FROM_PREDICT
    small = np.asarray(Image.open(io.BytesIO(chosen.data)))
    expected = predict(demo, small)
    assert metric(app, "Predicted") == [expected.label]

    maps = {f["data"][1]["colorbar"]["title"]["text"]: f for f in figures(app)
            if len(f["data"]) == 2 and f["data"][1]["type"] == "heatmap"}
    cam = maps["evidence"]["data"][1]
    z = array(cam["z"]).astype(float)
    assert z.shape == (SHOWN_SIZE, SHOWN_SIZE) and np.ptp(z) > 0
    assert cam["opacity"] == 0.5
    reference = explain.upsample(original(demo, small, "conv5", expected.index).values, SHOWN_SIZE)
    np.testing.assert_allclose(z, reference, rtol=1e-4, atol=1e-7)
    assert "attribution" in maps                                         # Integrated Gradients beside it
    n_calls = len(calls)

    app.slider(key="cam_opacity").set_value(0.8).run()
    cam = next(f["data"][1] for f in figures(app) if len(f["data"]) == 2 and f["data"][1]["type"] == "heatmap")
    assert cam["opacity"] == 0.8
    assert len(calls) == n_calls                                         # a slider move redraws, from the cache

    app.selectbox(key="cam_layer").select("conv3").run()
    app.selectbox(key="cam_target").select("truck").run()
    assert not app.exception
    assert calls[-1][:2] == ("conv3", CIFAR10_CLASSES.index("truck"))


def verdicts(at) -> list[str]:
    return [s.value for s in at.success] + [w.value for w in at.warning]


def test_explain_draws_every_attribution_method_with_its_sanity_check(app, demo):
    app.switch_page("pages/explain.py").run()
    assert not app.exception, app.exception
    cat = to_cifar_array(load_image(EXAMPLES_DIR / "chelsea.png"), 32)
    predicted = predict(demo, cat).index
    box = app.selectbox(key="methods_method")
    assert box.options == list(attributions.METHODS) and box.value == "Grad-CAM++"
    for name, method in attributions.METHODS.items():
        app.selectbox(key="methods_method").select(name).run()
        assert not app.exception, (name, app.exception)
        assert app.selectbox(key="methods_layer").disabled == (not method.uses_layer)
        z = array(chart(app, "methods_map")["data"][1]["z"]).astype(float)
        expected = explain.upsample(attributions.attribute(demo, cat, predicted, "conv5", method=name).values,
                                    SHOWN_SIZE)
        np.testing.assert_allclose(z, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max(), err_msg=name)
        assert len(chart(app, "methods_check")["layout"]["annotations"]) == 6      # trained + five stops
        assert [v.split(" depends")[0].split(" does not")[0] for v in verdicts(app)] == [name]
        assert any(c.value.startswith(f"**{name}**") and method.computes in c.value for c in app.caption)
    assert verdicts(app)[0].startswith("Integrated Gradients depends on the weights")

    app.selectbox(key="methods_method").select("Layer-CAM").run()
    app.selectbox(key="methods_layer").select("conv1").run()
    app.selectbox(key="methods_target").select("truck").run()
    assert not app.exception
    z = array(chart(app, "methods_map")["data"][1]["z"]).astype(float)
    truck = attributions.attribute(demo, cat, CIFAR10_CLASSES.index("truck"), "conv1", method="Layer-CAM").values
    np.testing.assert_allclose(z, explain.upsample(truck, SHOWN_SIZE), rtol=1e-4, atol=1e-6 * truck.max())
    app.selectbox(key="methods_method").select("Grad-CAM").run()
    app.selectbox(key="methods_layer").select("conv5").run()
    assert app.success[0].value.startswith("Grad-CAM depends on the weights")      # the randomisation changed it


def test_explain_draws_feature_maps_and_filters(app):
    app.switch_page("pages/explain.py").run()
    assert not app.exception
    app.selectbox(key="fm_layer").select("conv2").run()
    app.slider(key="fm_count").set_value(12).run()
    grids = [json.loads(c.proto.spec) for c in app.get("plotly_chart") if c.key == "fm_figure"]
    assert len(grids) == 1
    channels = array(grids[0]["data"][0]["customdata"])
    assert len(set(channels[channels >= 0].ravel().tolist())) == 12
    pictures = [array(f["data"][0]["z"]).shape for f in figures(app)
                if len(f["data"]) == 1 and f["data"][0]["type"] == "image"]
    assert (4 * 6 - 1, 16 * 6 - 1, 3) in pictures                        # conv1's 64 kernels, 16 a row, as RGB
    app.selectbox(key="filters_layer").select("conv4").run()
    assert any("conv4: filters 0 to 5 of 256" in c.value for c in app.caption)


def test_explain_without_a_predict_image_uses_the_examples_and_reports_bad_uploads(runs_dir, mini_dir,
                                                                                    monkeypatch):
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.switch_page("pages/explain.py").run()
    assert not at.exception
    assert at.radio(key="explain_source").options == ["Examples", "Test-set gallery", "Upload"]
    assert at.selectbox(key="explain_example").value == "chelsea.png"
    at.radio(key="explain_source").set_value("Upload").run()
    at.file_uploader(key="explain_upload").upload("fake.jpg", b"GIF89a but not really").run()
    assert not at.exception
    assert any("fake.jpg" in e.value for e in at.error)


def test_explain_class_options_do_not_depend_on_the_image(runs_dir, mini_dir, monkeypatch, demo, mini_data):
    """The browser keeps an option's label from when it was picked: labels naming the prediction went stale."""
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.switch_page("pages/explain.py").run()
    expected = {"chelsea.png": predict(demo, load_image(EXAMPLES_DIR / "chelsea.png")).label,
                "#0": predict(demo, mini_data.test_x[0].permute(1, 2, 0).numpy()).label,
                "astronaut.jpg": predict(demo, load_image(EXAMPLES_DIR / "astronaut.jpg")).label}
    assert len(set(expected.values())) == 3

    def show(image: str) -> None:
        if image == "#0":
            at.radio(key="explain_source").set_value("Test-set gallery").run()
        else:
            at.radio(key="explain_source").set_value("Examples").run()
            at.selectbox(key="explain_example").set_value(image).run()
        assert not at.exception, at.exception

    def headings() -> list[str]:
        return [m.value for m in at.markdown if m.value.startswith("**")]

    for image, label in expected.items():
        show(image)
        assert metric(at, "Predicted") == [label]
        box = at.selectbox(key="cam_target")
        assert box.value == "the predicted class"
        assert list(box.proto.options) == ["the predicted class", *CIFAR10_CLASSES]     # what the browser gets
        assert any(c.value == f"For this image: {label}" for c in at.caption)
        assert headings()[:3] == [f"**Grad-CAM** (conv5, class {label})", f"**Guided Grad-CAM** (conv5, class {label})",
                              f"**Integrated Gradients** (class {label})"]

    at.selectbox(key="cam_target").select("truck").run()                 # an explicit class stays for the next image
    show("chelsea.png")
    assert at.selectbox(key="cam_target").value == "truck"
    # only the Methods tab's own class box, still on the predicted class, names the prediction now
    naming = [c.value for c in at.caption if c.value.startswith("For this image")]
    assert naming == [f"For this image: {expected['chelsea.png']}"]
    assert at.selectbox(key="methods_target").value == "the predicted class"
    assert headings()[0] == "**Grad-CAM** (conv5, class truck)"


def test_the_camera_source_waits_for_a_photo_without_error(app):
    app.radio(key="predict_source").set_value("Camera").run()
    assert not app.exception and not app.error
    assert app.get("camera_input")
    assert any("Pick an example" in i.value for i in app.info)


def test_two_different_checkpoints_with_one_name_are_not_confused(app, tmp_path):
    """Per-image results are cached by the model's key: it must follow the file's bytes, not its name."""
    app.selectbox(key="predict_model").select(model_picker.UPLOAD_CHECKPOINT).run()
    torch.manual_seed(1)
    untrained = tmp_path / "untrained.safetensors"
    save_weights(untrained, build("cifar", "bn", init="torch").eval())
    shown = []
    for path in (DEMO_WEIGHTS, untrained):
        app.file_uploader(key="predict_model_file").set_value(
            ("model.safetensors", path.read_bytes(), "application/octet-stream")).run()
        assert not app.exception and not app.error
        expected = predict(load_model(path), load_image(EXAMPLES_DIR / "chelsea.png"))
        assert metric(app, "Top probability") == [f"{expected.confidence:.1%}"]
        shown.append(metric(app, "Top probability")[0])
    assert shown[0] != shown[1]
