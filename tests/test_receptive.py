"""alexnet.receptive: receptive fields from the layer list, and the top-nine pass against brute force."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from alexnet import explain, receptive
from alexnet.checkpoints import load_model
from alexnet.data import normalization, to_model_input
from alexnet.models import build
from alexnet.predict import DEMO_WEIGHTS
from model_checks import assert_behaves_like

pytestmark = pytest.mark.usefixtures("one_thread")  # one thread, as these views compute in the app; put back after


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_WEIGHTS)


@pytest.fixture(scope="module")
def test_images(mini_data):
    return mini_data.test_x[:400]


def linear_copy(model: nn.Module) -> nn.Sequential:
    """The conv stack with the same geometry but every unit a positive sum of all it sees: ReLUs and norms
    dropped, max pools made average pools, every weight a small positive number. A unit's input gradient is
    then non-zero exactly on the pixels of its receptive field."""
    layers = []
    for module in copy.deepcopy(model.features):
        if isinstance(module, nn.MaxPool2d):
            module = nn.AvgPool2d(module.kernel_size, module.stride, module.padding)
        elif isinstance(module, nn.Conv2d):
            nn.init.constant_(module.weight, 0.01)
            nn.init.zeros_(module.bias)
        elif not isinstance(module, nn.AvgPool2d):
            module = nn.Identity()
        layers.append(module)
    return nn.Sequential(*layers).eval()


def field_by_gradient(stack: nn.Sequential, stop: int, side: int, y: int, x: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the input pixels that unit (y, x) after layer `stop` depends on."""
    image = torch.zeros(1, 3, side, side, requires_grad=True)
    out = stack[:stop + 1](image)
    (grad,) = torch.autograd.grad(out[0, 0, y, x], image)
    rows, cols = np.nonzero(grad[0].abs().sum(0).numpy())
    return rows.min(), cols.min(), rows.max() + 1, cols.max() + 1


@pytest.mark.parametrize("variant", ["cifar", "paper", "imagenet"])
def test_receptive_fields_are_the_pixels_a_unit_depends_on(variant):
    model = build(variant, "none" if variant == "imagenet" else "lrn", init="torch")
    side = model.input_size
    fields = receptive.receptive_fields(model)
    stack = linear_copy(model)
    assert list(fields) == [layer.title for layer in explain.conv_layers(model)]
    for layer in explain.conv_layers(model):
        field = fields[layer.title]
        last = stack[:layer.index + 1](torch.zeros(1, 3, side, side)).shape[-1] - 1
        for y, x in {(0, 0), (last // 2, last // 2), (last, 0), (last, last)}:
            assert field.window(y, x, side) == field_by_gradient(stack, layer.index, side, y, x), (layer.title, y, x)


def test_the_paper_networks_fields_are_the_known_ones():
    """conv1 of the 2012 network sees 11x11 pixels 4 apart; conv5 sees 163x163, 16 apart."""
    fields = receptive.receptive_fields(build("paper", "lrn", init="torch"))
    assert (fields["conv1"].size, fields["conv1"].stride) == (11, 4)
    assert (fields["conv5"].size, fields["conv5"].stride) == (163, 16)


def brute_force(model, images, layer: str, channel: int):
    """Each image's largest activation of one channel, and where it lies: the whole map of every image at once."""
    conv = explain.find_layer(model, layer)
    with torch.no_grad():
        maps = model.features[:conv.index + 2](to_model_input(images, model.input_size, *normalization(model)))
    maps = maps[:, channel].numpy()
    return maps.reshape(len(maps), -1).max(axis=1), maps


@pytest.mark.parametrize("layer, channels", [("conv2", (3, 77)), ("conv5", (0, 200))])
def test_the_top_nine_are_the_true_argmax_activations(demo, test_images, layer, channels):
    top = receptive.top_images(demo, test_images, [layer], k=9, batch_size=64)[layer]
    assert top.images.shape == (explain.find_layer(demo, layer).out_channels, 9)
    for channel in channels:
        best, maps = brute_force(demo, test_images, layer, channel)
        order = np.argsort(-best, kind="stable")
        assert best[order[8]] > best[order[9]] + 1e-4, "a tie at the ninth place: pick another channel"
        assert set(top.images[channel].tolist()) == set(order[:9].tolist())
        np.testing.assert_allclose(top.values[channel], best[order[:9]], rtol=1e-4, atol=1e-5)
        assert list(top.values[channel]) == sorted(top.values[channel], reverse=True)
        for image, value, (y, x) in zip(top.images[channel], top.values[channel], top.positions[channel]):
            assert maps[image, y, x] == pytest.approx(value, rel=1e-4, abs=1e-5)   # the argmax's position


def test_one_pass_serves_every_layer_and_a_shallow_request_goes_no_deeper(demo, test_images):
    every = receptive.top_images(demo, test_images[:128])
    assert list(every) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    alone = receptive.top_images(demo, test_images[:128], ["conv3"])
    assert list(alone) == ["conv3"]
    np.testing.assert_array_equal(alone["conv3"].images, every["conv3"].images)


def test_the_crop_is_what_the_unit_sees(demo, test_images):
    """The crop lies where the field arithmetic puts it, and the unit's activation changes with the pixels
    inside it and with none outside."""
    top = receptive.top_images(demo, test_images, ["conv2"])["conv2"]
    conv = explain.find_layer(demo, "conv2")
    field = top.field
    image, (y, x) = int(top.images[5, 0]), top.positions[5, 0]
    picture = test_images[image].permute(1, 2, 0).numpy()
    pixels, (t, l, b, r) = receptive.crop(picture, field, int(y), int(x))
    assert (t, l) == (max(field.offset + y * field.stride, 0), max(field.offset + x * field.stride, 0))
    assert (b - t, r - l) == pixels.shape[:2] and b <= 32 and r <= 32
    np.testing.assert_array_equal(pixels, picture[t:b, l:r])

    def unit(p: np.ndarray) -> float:
        with torch.no_grad():
            x_in = to_model_input(torch.from_numpy(p).permute(2, 0, 1)[None].contiguous(), 32, *normalization(demo))
            return float(demo.features[:conv.index + 2](x_in)[0, 5, y, x])

    outside, inside = picture.copy(), picture.copy()
    mask = np.ones((32, 32), dtype=bool)
    mask[t:b, l:r] = False
    outside[mask] = 255 - outside[mask]
    inside[t:b, l:r] = 255 - inside[t:b, l:r]
    assert unit(outside) == pytest.approx(unit(picture), abs=1e-5)
    assert abs(unit(inside) - unit(picture)) > 1e-3


def test_the_top_images_pass_leaves_the_model_as_it_was(demo, test_images):
    before = {k: v.clone() for k, v in demo.state_dict().items()}
    layout = demo.features[0].weight.is_contiguous()
    receptive.top_images(demo, test_images[:64])
    assert not demo.training and demo.features[0].weight.is_contiguous() == layout
    assert all(torch.equal(before[k], v) for k, v in demo.state_dict().items())
    assert_behaves_like(demo, load_model(DEMO_WEIGHTS), side=32)   # no hook left behind
