"""The ImageNet model in the app (Streamlit's AppTest): Predict with 1000 names beside a CIFAR-10 model, Explain at
224x224, the download offer when the weights are absent, the fine-tuning preset on Train, the Home sentence.

The weights are torchvision's AlexNet with random weights, written where torchvision's download would put
them under a temporary $TORCH_HOME: nothing here touches the network.
"""
from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest
from torchvision.models import AlexNet_Weights, alexnet

from alexnet import charts, explain, imagenet
from alexnet.images import load_image
from alexnet.predict import DEMO_WEIGHTS, EXAMPLES_DIR, predict
from pages._shared import model_picker

REPO = Path(__file__).resolve().parent.parent
CAT = EXAMPLES_DIR / "chelsea.png"
pytestmark = [pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU"),
              pytest.mark.filterwarnings("ignore:.*required_grads has been set automatically")]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(1)
    state = alexnet(weights=None).state_dict()
    home = tmp_path_factory.mktemp("torch-home")
    hub = home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    hub.parent.mkdir(parents=True)
    torch.save(state, hub)
    named = home / "elsewhere.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(named))
    return home, hub, named


@pytest.fixture(scope="module")
def reference(weights):
    return imagenet.load_pretrained(weights[1])


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        pytest.fail(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(imagenet, "start_download", refuse)


def open_app(page: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def app(weights, runs_dir, mini_dir, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(weights[0]))
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    return open_app("pages/predict.py")


def figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def array(value) -> np.ndarray:
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(n) for n in str(value.get("shape", len(flat))).split(",")])
    return np.asarray(value)


def chart(at, key: str) -> dict:
    """The figure of the chart drawn with this key (an element's id ends with its key)."""
    (found,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    return found


def bars(at) -> list[dict]:
    return [f["data"][0] for f in figures(at) if f["data"] and f["data"][0]["type"] == "bar"]


def metric(at, label: str) -> list[str]:
    return [m.value for m in at.metric if m.label == label]


def upload_cat(at, key: str = "predict") -> None:
    at.radio(key=f"{key}_source").set_value("Upload").run()
    at.file_uploader(key=f"{key}_upload").upload("chelsea.png", CAT.read_bytes(), "image/png").run()
    assert not at.exception, at.exception


def test_predict_names_the_photo_in_1000_classes_beside_a_cifar_model(app, reference):
    app.selectbox(key="predict_model").select(model_picker.IMAGENET).run()
    upload_cat(app)
    expected = predict(reference, load_image(CAT))
    assert metric(app, "Predicted") == [expected.label]
    assert metric(app, "Top probability") == [f"{expected.confidence:.1%}"]
    (trace,) = bars(app)
    shown = list(reversed(trace["y"]))                                   # most likely on top
    assert shown == [name for name, _ in expected.top(5)]
    assert array(trace["x"])[::-1] == pytest.approx([p for _, p in expected.top(5)], abs=1e-6)
    assert any("top-1 56.5%" in c.value and "top-5 79.1%" in c.value for c in app.caption)
    seen = [f for f in figures(app) if f["data"] and f["data"][0]["type"] == "image"]
    assert [f["layout"]["title"]["text"] for f in seen] == ["what the ImageNet model sees: resized to 256, centre "
                                                            "224x224"]
    assert np.array_equal(array(seen[0]["data"][0]["z"]), imagenet.photo_pixels(load_image(CAT)))  # 224x224

    second = app.selectbox(key="predict_model_2")
    second.select(next(o for o in second.options if o.startswith("demo"))).run()
    assert not app.exception
    demo = predict(imagenet_free_demo(), load_image(CAT))
    assert metric(app, "Predicted") == [expected.label, demo.label]
    assert [len(t["y"]) for t in bars(app)] == [5, 10]                  # top 5 of 1000 beside all ten


def imagenet_free_demo():
    from alexnet.checkpoints import load_model

    return load_model(DEMO_WEIGHTS)


def test_explain_draws_all_three_maps_at_224_for_any_of_the_1000_classes(app, reference):
    app.selectbox(key="predict_model").select(model_picker.IMAGENET).run()
    upload_cat(app)
    app.switch_page("pages/explain.py").run()
    assert not app.exception, app.exception
    assert app.selectbox(key="explain_model").value == model_picker.IMAGENET
    pixels = imagenet.photo_pixels(load_image(CAT))
    predicted = predict(reference, pixels)

    def cam_map():
        heat = chart(app, "map_Grad-CAM")["data"][1]
        assert heat["type"] == "heatmap" and heat["colorbar"]["title"]["text"] == "evidence"
        return heat

    z = array(cam_map()["z"]).astype(float)
    assert z.shape == (224, 224)
    np.testing.assert_allclose(z, explain.grad_cam(reference, pixels, "conv5", predicted.index).values,
                               rtol=1e-4, atol=1e-7)
    # Random weights: some classes have no positive evidence here (the page says so); explain one that has.
    maps = {name: explain.grad_cam(reference, pixels, "conv5", imagenet.CATEGORIES.index(name)).values
            for name in imagenet.CATEGORIES[281:286]}
    name = next(n for n, values in maps.items() if np.ptp(values) > 0)
    target = app.selectbox(key="cam_target_1000")
    assert len(target.options) == 1001
    target.select(name).run()
    assert not app.exception
    assert any(m.value == f"**Grad-CAM** (conv5, class {name})" for m in app.markdown)
    np.testing.assert_allclose(array(cam_map()["z"]).astype(float), maps[name], rtol=1e-4, atol=1e-7)
    # The other two maps, for the same class at 224: Guided Grad-CAM (signed RGB) and Integrated Gradients.
    index = imagenet.CATEGORIES.index(name)
    assert any(m.value == f"**Guided Grad-CAM** (conv5, class {name})" for m in app.markdown)
    guided = explain.guided_grad_cam(reference, pixels, "conv5", index).values
    assert guided.shape == (224, 224, 3) and np.any(guided)
    drawn = array(chart(app, "map_Guided Grad-CAM")["data"][0]["z"]).astype(int)
    assert drawn.shape == (224, 224, 3) and np.ptp(drawn) > 0
    np.testing.assert_allclose(drawn, charts.signed_rgb(guided).astype(int), atol=1)  # a rounding apart at most
    assert any(m.value == f"**Integrated Gradients** (class {name})" for m in app.markdown)
    ig = explain.integrated_gradients(reference, pixels, index, steps=32).values
    heat = chart(app, "map_Integrated Gradients")["data"][1]
    assert heat["type"] == "heatmap" and heat["colorbar"]["title"]["text"] == "attribution"
    z = array(heat["z"]).astype(float)
    assert z.shape == (224, 224) and np.ptp(z) > 0
    np.testing.assert_allclose(z, explain.upsample(ig, 224), rtol=1e-3, atol=1e-3 * np.abs(ig).max())
    assert not any("zero everywhere" in i.value or "NaN" in i.value for i in app.info)
    pictures = [array(f["data"][0]["z"]).shape for f in figures(app)
                if len(f["data"]) == 1 and f["data"][0]["type"] == "image"]
    assert (4 * 12 - 1, 16 * 12 - 1, 3) in pictures                   # conv1's 64 kernels of 11x11, as RGB
    assert np.array_equal(array(chart(app, "explain_small")["data"][0]["z"]), pixels)  # the 224x224 network input


def test_a_weights_file_named_on_the_server_is_used(app, weights, reference):
    app.selectbox(key="predict_model").select(model_picker.IMAGENET).run()
    app.text_input(key="predict_model_imagenet_file").input(str(weights[2])).run()
    assert not app.exception and not app.error
    assert any(str(weights[2]) in c.value for c in app.caption)
    assert metric(app, "Predicted") == [predict(reference, load_image(CAT)).label]
    app.text_input(key="predict_model_imagenet_file").input(str(weights[2].with_name("typo.pth"))).run()
    assert any("typo.pth does not exist" in e.value for e in app.error)


def test_absent_weights_get_the_message_and_a_download_with_progress(tmp_path, runs_dir, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    started = []

    def fake_start() -> int:
        """What the real one's process does first: a running status, then torch's growing .partial file."""
        started.append(True)
        folder = imagenet.hub_file().parent
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "alexnet-owt-7be5be79.pth.download.json").write_text(json.dumps({"state": "running",
                                                                                   "pid": os.getpid()}))
        (folder / "alexnet-owt-7be5be79.pth.5eed.partial").write_bytes(b"\0" * int(imagenet.FILE_MB * 2**20 * 0.4))
        return os.getpid()

    monkeypatch.setattr(imagenet, "start_download", fake_start)
    at = open_app("pages/predict.py")
    at.selectbox(key="predict_model").select(model_picker.IMAGENET).run()
    assert not at.exception
    (warning,) = [w.value for w in at.warning]
    assert AlexNet_Weights.IMAGENET1K_V1.url in warning and str(tmp_path / "torch" / "hub" / "checkpoints") in warning
    assert not metric(at, "Predicted")
    at.button(key="predict_model_imagenet_fetch").click().run()
    assert started == [True]
    progress = [e.proto for e in at.get("progress")]
    assert progress and "Downloading the ImageNet weights: 40%" in progress[0].text


def test_train_page_offers_the_fine_tuning_preset(weights, runs_dir, mini_dir, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(weights[0]))
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    at = open_app("pages/train.py")
    at.selectbox(key="train.preset").select("imagenet-finetune").run()
    assert not at.exception
    assert at.selectbox(key="train.variant").value == "imagenet"
    assert at.selectbox(key="train.norm").options == ["none"]
    assert at.checkbox(key="train.freeze_features").value is False
    assert at.number_input(key="train.features_lr_scale").value == 0.1
    assert not at.button(key="train.start").disabled
    monkeypatch.setenv("TORCH_HOME", str(weights[0] / "empty"))
    at.run()
    assert at.button(key="train.start").disabled
    assert any(AlexNet_Weights.IMAGENET1K_V1.url in e.value for e in at.error)


def test_home_says_what_the_imagenet_model_is(runs_dir, monkeypatch):
    at = open_app("pages/home.py")
    assert any("torchvision's own figures" in m.value and "56.5%" in m.value for m in at.markdown)
    at.selectbox(key="home.variant").select("imagenet").run()
    assert not at.exception
    assert at.selectbox(key="home.norm").options == ["none"]
    assert metric(at, "Parameters") == ["57,044,810"]
