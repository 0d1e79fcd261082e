"""alexnet.imagenet: torchvision's ImageNet AlexNet from the hub cache or a named file, never from the network in
tests; its preprocessing and names; Grad-CAM at 224x224; fine-tuning on CIFAR-10 as a run like any other.

Tests cannot download the 233 MB file: they write torchvision's AlexNet with random weights where the
download would put it, under a temporary $TORCH_HOME, and as named .pth and .safetensors files.
"""
from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision.models import AlexNet_Weights, alexnet

from alexnet import explain, imagenet, predict
from alexnet.checkpoints import load_model
from alexnet.cli import main as cli_main
from alexnet.config import TrainConfig
from alexnet.data import Augment, Cifar10, augment_batch, normalization, to_model_input
from alexnet.images import load_image, to_cifar_array, to_tensor
from alexnet.inputs import image_size, model_image
from alexnet.models import build
from alexnet.presets import PRESETS
from alexnet.runs import RunWriter
from alexnet.train import make_optimizer, make_schedule, train
from alexnet.weight_files import CheckpointError
from model_checks import assert_behaves_like

pytestmark = [pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU"),
              pytest.mark.filterwarnings("ignore:.*required_grads has been set automatically")]

WEIGHTS = AlexNet_Weights.IMAGENET1K_V1
CAT = predict.EXAMPLES_DIR / "chelsea.png"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Random torchvision AlexNet weights in the hub cache layout of a fresh TORCH_HOME, and as named files."""
    torch.manual_seed(0)
    state = alexnet(weights=None).state_dict()
    root = tmp_path_factory.mktemp("imagenet")
    home = root / "torch"
    hub = home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    hub.parent.mkdir(parents=True)
    torch.save(state, hub, _use_new_zipfile_serialization=False)   # the legacy format of torchvision's 2017 file
    pth = root / "my-alexnet.pth"
    torch.save(state, pth)
    safetensors = root / "my-alexnet.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safetensors))
    return SimpleNamespace(state=state, home=home, hub=hub, pth=pth, safetensors=safetensors)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download or to open a connection fails the test (torchvision's weights download through
    torch.hub.load_state_dict_from_url, which fetches with torch.hub.download_url_to_file)."""
    def refuse(*args, **kwargs):
        pytest.fail(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def hub(files, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(files.home))
    assert Path(torch.hub.get_dir()) == files.home / "hub"          # torch follows the variable on every call
    assert imagenet.hub_file() == files.hub
    return files


@pytest.fixture
def empty_hub(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def model(files):
    """The pretrained model, loaded once (by path: $TORCH_HOME is set per test)."""
    return imagenet.load_pretrained(files.hub)


def same_weights(model, state) -> bool:
    own = model.state_dict()
    return own.keys() == state.keys() and all(torch.equal(own[k], state[k]) for k in state)


# ---- where the weights come from ----

def test_loads_from_the_hub_cache_without_any_download(hub):
    model = imagenet.load_pretrained()
    assert same_weights(model, hub.state)
    assert not model.training
    assert not any(getattr(m, "inplace", False) for m in model.modules())      # captum needs ReLUs not in place
    assert model.classifier[-1].out_features == 1000
    assert (model.variant, model.input_size, image_size(model)) == ("imagenet", 224, 224)


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_loads_a_named_file_and_ignores_the_hub_cache(files, empty_hub, kind):
    model = imagenet.load_pretrained(getattr(files, kind))
    assert same_weights(model, files.state)
    assert not empty_hub.exists()


def test_absent_weights_say_which_url_to_fetch_and_where_to_put_it(empty_hub):
    with pytest.raises(imagenet.WeightsMissing) as err:
        imagenet.load_pretrained()
    message = str(err.value)
    assert WEIGHTS.url in message
    assert str(empty_hub) in message and "alexnet-owt-7be5be79.pth" in message
    assert "python -m alexnet download --imagenet" in message
    with pytest.raises(imagenet.WeightsMissing, match="nowhere.pth does not exist"):
        imagenet.load_pretrained(empty_hub / "nowhere.pth")


def test_a_file_that_is_not_the_imagenet_alexnet_is_refused(hub, tmp_path):
    with pytest.raises(CheckpointError, match="is not torchvision's ImageNet AlexNet: wrong shapes"):
        imagenet.load_pretrained(predict.DEMO_WEIGHTS)
    code = tmp_path / "code.pth"
    torch.save({"model": SimpleNamespace(a=1)}, code)                       # a pickle that would build an object
    with pytest.raises(CheckpointError, match="refused"):
        imagenet.load_pretrained(code)


def test_class_names_are_torchvisions_1000_categories(model):
    assert predict.class_names(model) == tuple(WEIGHTS.meta["categories"]) == imagenet.CATEGORIES
    assert len(imagenet.CATEGORIES) == 1000 and imagenet.CATEGORIES[0] == "tench"
    result = predict.predict(model, load_image(CAT))
    assert len(result.probabilities) == 1000 and sum(result.probabilities) == pytest.approx(1.0, abs=1e-4)
    top = result.top(5)
    assert [name for name, _ in top] == [imagenet.CATEGORIES[i] for i in np.argsort(result.probabilities)[::-1][:5]]


def test_preprocessing_is_torchvisions_own_transform(model):
    """The same tensor as weights.transforms() for a photo, a wide random image and a 32x32 test image."""
    rng = np.random.default_rng(0)
    images = [load_image(CAT), Image.fromarray(rng.integers(0, 256, (300, 517, 3), dtype=np.uint8)),
              Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))]
    reference = WEIGHTS.transforms()
    for image in images:
        assert torch.equal(model_image(image, model).tensor(), reference(image)[None])
    # the 224x224 picture the pages cache is the same input again
    pixels = model_image(images[0], model).pixels
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert torch.equal(model_image(pixels, model).tensor(), reference(images[0])[None])
    assert predict.predict(model, pixels) == predict.predict(model, images[0])


def test_normalisation_is_a_property_of_the_model():
    transforms = WEIGHTS.transforms()
    assert normalization(build("imagenet", "none")) == (tuple(transforms.mean), tuple(transforms.std))
    assert normalization(build("cifar", "bn"))[0] == (0.4914, 0.4822, 0.4465)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    stats = normalization(build("imagenet", "none"))
    trained_on = augment_batch(x, Augment(crop_padding=0, flip=False), 224, gen, *stats)
    assert torch.allclose(trained_on, to_model_input(x, 224, *stats), atol=1e-6)
    assert not torch.allclose(trained_on, to_model_input(x, 224), atol=1e-2)      # CIFAR's statistics differ


def test_a_fine_tuned_model_sees_32px_images_upsampled_with_imagenet_statistics():
    tuned = build("imagenet", "none", init="torch").eval()
    photo = load_image(CAT)
    assert image_size(tuned) == 32 and predict.class_names(tuned)[0] == "airplane"
    expected = to_model_input(to_tensor(to_cifar_array(photo, 32)), 224, imagenet.MEAN, imagenet.STD)
    assert torch.equal(model_image(photo, tuned).tensor(), expected)


# ---- explaining it at 224x224 ----

def manual_grad_cam(model, x, conv_index, target):
    acts = model.features[:conv_index + 2](x)
    acts.retain_grad()
    score = model.classifier(torch.flatten(model.avgpool(model.features[conv_index + 2:](acts)), 1))[0, target]
    score.backward()
    cam = torch.relu((acts.grad.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    model.zero_grad(set_to_none=True)
    return cam[0, 0].detach().numpy()


def test_conv_layers_filters_and_feature_maps_of_the_imagenet_model(model):
    layers = explain.conv_layers(model)
    assert [(l.title, l.name) for l in layers] == [("conv1", "features.0"), ("conv2", "features.3"),
                                                   ("conv3", "features.6"), ("conv4", "features.8"),
                                                   ("conv5", "features.10")]
    assert all(isinstance(explain.activation_module(model, l), torch.nn.ReLU) for l in layers)
    assert explain.rgb_filters(model).shape == (64, 11, 11, 3)
    maps = explain.feature_maps(model, load_image(CAT), "conv1")
    assert maps.maps.shape == (64, 55, 55) and np.all(np.diff(maps.strength) <= 0)


def test_grad_cam_at_224_equals_the_formula_and_leaves_no_trace(hub, model):
    photo = load_image(CAT)
    x = model_image(photo, model).tensor()
    target = predict.predict(model, photo).index
    result = explain.grad_cam(model, photo)
    assert (result.layer, result.target, result.values.shape) == ("conv5", target, (224, 224))
    expected = manual_grad_cam(copy.deepcopy(model), x, explain.find_layer(model, "conv5").index, target)
    assert np.ptp(expected) > 0
    np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-6 * float(expected.max()))
    any_class = explain.grad_cam(model, photo, "conv4", 281)          # any of the 1000, by index
    assert any_class.target == 281 and any_class.values.shape == (224, 224)
    guided = explain.guided_grad_cam(model, photo, None, target)
    assert guided.values.shape == (224, 224, 3) and np.ptp(guided.values) > 0
    ig = explain.integrated_gradients(model, photo, target, steps=4)
    assert ig.values.shape == (224, 224)
    with torch.no_grad():
        black = to_model_input(torch.zeros(1, 3, 224, 224, dtype=torch.uint8), 224, imagenet.MEAN, imagenet.STD)
        gap = float(model(x)[0, target] - model(black)[0, target])
    assert ig.score_gap == pytest.approx(gap, rel=1e-4, abs=1e-5)
    assert all(p.grad is None for p in model.parameters())
    assert same_weights(model, hub.state)
    assert_behaves_like(model, imagenet.load_pretrained(hub.hub), 224)


# ---- downloading ----

def through_torchvision(monkeypatch, download) -> None:
    """torchvision's download path as it is, down to torch's file download, which `download` replaces."""
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)

def test_download_is_torchvisions_own_into_the_hub_cache(files, empty_hub, monkeypatch):
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst), hash_prefix, progress))
        Path(dst).write_bytes(files.hub.read_bytes())

    through_torchvision(monkeypatch, fake_download)
    assert imagenet.download_progress()["state"] == "none"
    assert imagenet.download(progress=False) == empty_hub / "alexnet-owt-7be5be79.pth"
    assert calls == [(WEIGHTS.url, empty_hub / "alexnet-owt-7be5be79.pth", "7be5be79", False)]  # hash checked
    assert imagenet.download_progress() == {"state": "finished", "fraction": 1.0}
    assert same_weights(imagenet.load_pretrained(), files.state)


def test_a_failed_download_says_what_to_do_offline(empty_hub, monkeypatch, capsys):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    through_torchvision(monkeypatch, offline)
    assert cli_main(["download", "--imagenet", "--quiet"]) == 2
    message = capsys.readouterr().err
    assert WEIGHTS.url in message and str(empty_hub) in message and "name resolution" in message
    progress = imagenet.download_progress()
    assert progress["state"] == "failed" and WEIGHTS.url in progress["reason"]


def test_download_progress_follows_the_growing_file_and_notices_a_dead_process(empty_hub):
    empty_hub.mkdir(parents=True)
    status = empty_hub / "alexnet-owt-7be5be79.pth.download.json"
    status.write_text(json.dumps({"state": "running", "pid": os.getpid()}))
    (empty_hub / "alexnet-owt-7be5be79.pth.0123abcd.partial").write_bytes(b"\0" * (3 * 2**20))
    progress = imagenet.download_progress()
    assert progress["state"] == "running"
    assert progress["fraction"] == pytest.approx(3 / imagenet.FILE_MB)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    status.write_text(json.dumps({"state": "running", "pid": ended.pid}))
    progress = imagenet.download_progress()
    assert progress["state"] == "failed" and "ended before it finished" in progress["reason"]


# ---- the command line ----

def test_cli_predicts_with_the_imagenet_model_from_the_cache_or_a_named_file(hub, model, capsys):
    expected = predict.predict(model, load_image(CAT)).top(5)
    assert cli_main(["predict", "--imagenet", str(CAT), "--top", "5"]) == 0
    line = capsys.readouterr().out.strip()
    assert line == f"{CAT}: " + ", ".join(f"{name} {p:.1%}" for name, p in expected)
    assert cli_main(["predict", "--imagenet", "--weights", str(hub.safetensors), str(CAT), "--top", "5"]) == 0
    assert capsys.readouterr().out.strip() == line


def test_cli_without_the_weights_names_the_file_to_fetch(empty_hub, capsys):
    assert cli_main(["predict", "--imagenet", str(CAT)]) == 2
    err = capsys.readouterr().err
    assert WEIGHTS.url in err and str(empty_hub) in err


# ---- fine-tuning on CIFAR-10 ----

def test_config_fields_and_the_preset():
    preset = PRESETS["imagenet-finetune"].config()
    assert preset.problems() == []
    assert (preset.variant, preset.norm, preset.features_lr_scale, preset.freeze_features) == \
        ("imagenet", "none", 0.1, False)
    assert any("no bn layers" in p for p in TrainConfig(variant="imagenet", norm="bn").problems())
    assert any("imagenet variant only" in p for p in TrainConfig(pretrained_path="x.pth").problems())
    assert any("rate scale" in p for p in TrainConfig(features_lr_scale=0).problems())
    with pytest.raises(ValueError, match="no lrn layers"):
        build("imagenet", "lrn")


def test_conv_layers_get_their_scaled_rate_and_frozen_ones_none():
    model = build("imagenet", "none")
    config = TrainConfig(variant="imagenet", norm="none", lr=0.02, features_lr_scale=0.1, epochs=2)
    optimizer = make_optimizer(config, model)
    features = {id(p) for p in model.features.parameters()}
    for group in optimizer.param_groups:
        in_features = {id(p) in features for p in group["params"]}
        assert len(in_features) == 1
        assert group["lr"] == pytest.approx(0.002 if in_features == {True} else 0.02)
    assert optimizer.param_groups[0]["lr"] == 0.02                    # the rate the curves show
    make_schedule(config, optimizer, steps_per_epoch=10)             # one-cycle keeps the ratio at its peak
    assert [g["max_lr"] for g in optimizer.param_groups] == pytest.approx([0.02, 0.02, 0.002, 0.002])
    model.features.requires_grad_(False)
    frozen = make_optimizer(TrainConfig(variant="imagenet", norm="none", features_lr_scale=0.1), model)
    assert not {id(p) for g in frozen.param_groups for p in g["params"]} & features
    assert len(make_optimizer(TrainConfig(), build("cifar")).param_groups) == 2   # other runs as before


def tiny(mini_data) -> Cifar10:
    """40 training images of the real subset (32 to train: two steps of 16, 8 to validate) and 16 test images."""
    return Cifar10(mini_data.train_x[:40], mini_data.train_y[:40], mini_data.test_x[:16], mini_data.test_y[:16],
                   mini_data.classes, mini_data.source)


def fine_tune(tmp_path, mini_data, **knobs) -> tuple[dict, Path]:
    config = TrainConfig(variant="imagenet", norm="none", epochs=1, batch_size=16, val_fraction=0.2, lr=0.01,
                         features_lr_scale=0.1, crop_padding=4, log_every=1, seed=0, **knobs)
    run = RunWriter.create(tmp_path, "run", config.to_dict()).path
    result = train(config, run, data=tiny(mini_data))
    return result, run


def test_fine_tuning_with_frozen_conv_layers_trains_only_the_classifier(hub, tmp_path, mini_data):
    result, run = fine_tune(tmp_path, mini_data, freeze_features=True)
    tuned = load_model(run / "weights.safetensors")                   # a run's weights, like any other run's
    assert (tuned.variant, tuned.norm, tuned.classifier[-1].out_features) == ("imagenet", "none", 10)
    state = tuned.state_dict()
    for name, tensor in hub.state.items():
        if name.startswith("features."):
            assert torch.equal(state[name], tensor), f"{name} changed although frozen"
        elif not name.startswith("classifier.6."):
            assert not torch.equal(state[name], tensor), f"{name} did not train"
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # two steps: the new head starts at zero, so the first step trains it alone and the second reaches the rest
    assert [e["global_step"] for e in events if e["event"] == "step"] == [1, 2]
    assert result["parameters"] == 57_044_810 and result["test_images"] == 16
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_fine_tuning_unfrozen_moves_the_conv_layers_too(hub, tmp_path, mini_data):
    _, run = fine_tune(tmp_path, mini_data, freeze_features=False, pretrained_path=str(hub.safetensors))
    state = load_model(run / "weights.safetensors").state_dict()
    for name, tensor in hub.state.items():
        if not name.startswith("classifier.6."):
            assert not torch.equal(state[name], tensor), f"{name} did not train"
    assert state["features.0.weight"].shape == (64, 3, 11, 11)         # started from the pretrained shapes


def test_fine_tuning_without_the_weights_fails_with_the_message(empty_hub, tmp_path, mini_data):
    with pytest.raises(imagenet.WeightsMissing):
        fine_tune(tmp_path, mini_data)
    reason = json.loads((tmp_path / "run" / "status.json").read_text())["reason"]
    assert WEIGHTS.url in reason and str(empty_hub) in reason
