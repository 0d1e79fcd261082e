"""alexnet.explain: filters, feature maps and captum maps, correct and without side effects on a shared model."""
from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest
import torch

from alexnet import explain
from alexnet.checkpoints import load_model
from alexnet.images import load_image, to_cifar_array
from alexnet.models import build
from alexnet.inputs import model_image
from alexnet.predict import DEMO_WEIGHTS, EXAMPLES_DIR, predict
from model_checks import assert_behaves_like


# explain.py silences these once at import; pytest resets warning filters for each test.
pytestmark = [pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU"),
              pytest.mark.filterwarnings("ignore:.*required_grads has been set automatically")]


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_WEIGHTS)


@pytest.fixture(scope="module")
def cat():
    return to_cifar_array(load_image(EXAMPLES_DIR / "chelsea.png"), 32)


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    return build("paper", "lrn", init="torch").eval()


@pytest.fixture(scope="module")
def fresh():
    """A second copy of the demo weights that nothing explains: what the shared copy must still behave like."""
    return load_model(DEMO_WEIGHTS)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- Grad-CAM ----

def manual_grad_cam(model, image, conv_index, target):
    """Grad-CAM written out by hand: rectified maps A, weights = spatial mean of d score / d A."""
    x = model_image(image, model).tensor()
    acts = model.features[:conv_index + 2](x)          # through the conv's ReLU
    acts.retain_grad()
    rest = model.features[conv_index + 2:](acts)
    score = model.classifier(model.flatten(rest))[0, target]
    score.backward()
    weights = acts.grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * acts).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    model.zero_grad(set_to_none=True)
    return cam[0, 0].detach().numpy()


@pytest.mark.parametrize("layer", ["conv5", "conv3", "conv1"])
def test_grad_cam_equals_the_formula_written_out(demo, cat, layer):
    target = 3
    conv = explain.find_layer(demo, layer)
    result = explain.grad_cam(demo, cat, layer, target)
    expected = manual_grad_cam(load_model(DEMO_WEIGHTS), cat, conv.index, target)
    assert result.values.shape == (32, 32)
    np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-6 * float(expected.max()))


def test_grad_cam_defaults_to_the_last_conv_and_the_predicted_class(demo, cat):
    result = explain.grad_cam(demo, cat)
    assert result.layer == "conv5"
    assert result.target == predict(demo, cat).index
    assert result.values.shape == (32, 32)
    assert result.values.min() >= 0 and np.ptp(result.values) > 0      # positive evidence, not constant
    assert result.problem is None


def test_grad_cam_of_the_paper_variant_has_its_input_size(paper, cat):
    """Untrained weights: some classes have no positive evidence at all; those must say so, not draw blank."""
    results = [explain.grad_cam(paper, cat, "conv5", target) for target in range(10)]
    assert all(r.values.shape == (227, 227) for r in results)
    assert any(np.ptp(r.values) > 0 for r in results)
    assert all((r.problem is None) == bool(np.ptp(r.values) > 0) for r in results)


def test_grad_cam_uses_batch_norm_in_eval_mode_and_restores_the_mode(cat):
    torch.manual_seed(0)
    model = build("cifar", "bn", init="torch")
    model.features[2].running_mean.fill_(0.3)               # statistics that differ from one image's batch
    model.features[2].running_var.fill_(2.0)
    model.train()
    in_training = explain.grad_cam(model, cat, "conv5", 1).values
    assert model.training
    model.eval()
    assert np.array_equal(in_training, explain.grad_cam(model, cat, "conv5", 1).values)


def test_explaining_leaves_the_shared_model_exactly_as_it_was(demo, cat, fresh):
    before = snapshot(demo)
    for method in (explain.grad_cam, explain.guided_grad_cam):
        method(demo, cat, "conv4", 2)
    explain.integrated_gradients(demo, cat, 2, steps=8)
    explain.feature_maps(demo, cat, "conv2")
    after = demo.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in demo.parameters())
    assert not demo.training
    assert_behaves_like(demo, fresh, 32)


def test_hooks_are_removed_even_when_captum_fails(demo, cat, fresh):
    with pytest.raises(Exception):
        explain.grad_cam(demo, cat, "conv5", target=99)          # no class 99: fails inside captum's forward
    with pytest.raises(Exception):
        explain.guided_grad_cam(demo, cat, "conv5", target=99)
    assert_behaves_like(demo, fresh, 32)


def test_the_check_sees_a_hook_left_behind_forward_or_backward(demo, fresh):
    """A leftover guided-backpropagation hook (ReLU gradients clamped) or a forward hook that rescales: each is
    seen, and gone once its handle is removed."""
    relu = next(m for m in demo.features if isinstance(m, torch.nn.ReLU))
    hooks = [relu.register_full_backward_hook(lambda m, grad_in, grad_out: (grad_in[0].clamp(min=0),)),
             demo.features[3].register_forward_hook(lambda m, args, out: out * 2)]
    for handle in hooks:
        with pytest.raises(AssertionError):
            assert_behaves_like(demo, fresh, 32)
        handle.remove()
    assert_behaves_like(demo, fresh, 32)


def test_200_grad_cam_calls_leave_memory_flat_and_no_hooks(demo, cat, fresh):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(8)] + [cat]
    for i in range(30):                                          # warm-up: allocator pools fill
        explain.grad_cam(demo, images[i % len(images)], None, i % 10)
    gc.collect()
    start = rss_bytes()
    for i in range(200):
        explain.grad_cam(demo, images[i % len(images)], None, i % 10)
    gc.collect()
    grown = rss_bytes() - start
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MB over 200 Grad-CAM calls"
    assert_behaves_like(demo, fresh, 32)


def test_concurrent_sessions_get_the_same_maps_as_one_at_a_time(demo, fresh):
    """Pages share one model across sessions (threads); a forward pass must not pass through another's hooks."""
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    expected = [explain.grad_cam(demo, img, "conv5", 3).values for img in images]
    expected_probs = [predict(demo, img).probabilities for img in images]
    failures = []

    def worker(k):
        try:
            for _ in range(15):
                if not np.array_equal(explain.grad_cam(demo, images[k], "conv5", 3).values, expected[k]):
                    failures.append(("cam", k))
                if predict(demo, images[k]).probabilities != expected_probs[k]:
                    failures.append(("predict", k))
        except Exception as err:          # without the per-model lock, captum fails here ("not used in the graph")
            failures.append((type(err).__name__, str(err)[:80]))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert_behaves_like(demo, fresh, 32)


# ---- other attributions and empty maps ----

def test_guided_grad_cam_and_integrated_gradients_have_the_image_shape(demo, cat):
    guided = explain.guided_grad_cam(demo, cat, None, 3)
    assert guided.values.shape == (32, 32, 3) and np.ptp(guided.values) > 0
    ig = explain.integrated_gradients(demo, cat, 3, steps=64, internal_batch_size=16)
    assert ig.values.shape == (32, 32) and np.ptp(ig.values) > 0
    # completeness: the attributions add up to score(image) - score(black), up to the integral's error
    x = model_image(cat, demo).tensor()
    black = model_image(np.zeros((32, 32, 3), np.uint8), demo).tensor()
    with torch.no_grad():
        gap = float(demo(x)[0, 3] - demo(black)[0, 3])
    assert ig.score_gap == pytest.approx(gap, rel=1e-4, abs=1e-4)
    assert ig.values.sum() == pytest.approx(gap, abs=abs(ig.delta) * 1.01 + 1e-4)
    assert abs(ig.delta) < 0.1 * abs(gap)


def test_a_map_with_no_evidence_gets_a_message_not_a_blank_image(cat):
    model = build("cifar", "none").eval()
    torch.nn.init.zeros_(model.classifier[-1].weight)             # every class score is constant
    result = explain.grad_cam(model, cat, "conv5", 0)
    assert not np.any(result.values)
    assert "zero everywhere" in result.problem
    assert "NaN" in explain.map_problem(np.array([[0.0, np.nan]]))
    assert explain.map_problem(np.array([[0.0, 0.5]])) is None


# ---- filters and feature maps ----

def test_conv_layers_are_named_as_in_the_paper(demo, paper):
    assert [l.title for l in explain.conv_layers(demo)] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [l.name for l in explain.conv_layers(demo)] == [f"features.{i}" for i in (0, 4, 8, 10, 12)]
    assert explain.find_layer(paper, "conv2").groups == 2
    with pytest.raises(ValueError, match="conv6"):
        explain.find_layer(demo, "conv6")


def test_filter_grids_have_the_shapes_of_the_kernels(demo, paper):
    rgb = explain.rgb_filters(demo)
    assert rgb.shape == (64, 5, 5, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert explain.rgb_filters(paper).shape == (96, 11, 11, 3)
    mosaic = explain.tile(rgb, columns=16, pad=1)
    assert mosaic.shape == (4 * 6 - 1, 16 * 6 - 1, 3)
    assert np.isnan(mosaic[5]).all() and np.array_equal(mosaic[:5, :5], rgb[0])
    conv2 = explain.filter_weights(demo, "conv2")
    assert conv2.shape == (192, 64, 5, 5)
    blocks = explain.kernel_mosaic(conv2, [3, 4, 5], columns=32, gap=3)
    block = 2 * 6 - 1                                                   # 64 channels, 32 to a row
    assert blocks.shape == (3 * block + 2 * 3, 32 * 6 - 1)
    np.testing.assert_array_equal(blocks[block + 3:block + 8, 12:17], conv2[4, 2])        # filter 4, channel 2
    np.testing.assert_array_equal(blocks[block + 9:block + 14, 6:11], conv2[4, 33])       # filter 4, channel 33
    assert np.isnan(blocks[block:block + 3]).all()
    assert explain.filter_weights(paper, "conv2").shape == (256, 48, 5, 5)   # grouped: half the channels each


def test_rgb_filters_put_zero_at_mid_grey_and_use_the_full_range(demo):
    weights = explain.filter_weights(demo, "conv1")
    rgb = explain.rgb_filters(demo)
    k = 0
    peak = np.abs(weights[k]).max()
    np.testing.assert_allclose(rgb[k], 0.5 + weights[k].transpose(1, 2, 0) / (2 * peak), rtol=1e-6)
    assert np.isclose(np.abs(rgb[k] - 0.5).max(), 0.5)


@pytest.mark.parametrize("layer, shape", [("conv1", (64, 32, 32)), ("conv2", (192, 15, 15)), ("conv5", (256, 7, 7))])
def test_feature_maps_are_sorted_strongest_first(demo, cat, layer, shape):
    maps = explain.feature_maps(demo, cat, layer)
    assert maps.maps.shape == shape
    assert np.all(np.diff(maps.strength) <= 0)
    assert sorted(maps.channels.tolist()) == list(range(shape[0]))
    # the same activations through a forward hook on the conv's ReLU, in the original channel order
    captured = {}
    module = explain.activation_module(demo, explain.find_layer(demo, layer))

    def keep(module, inputs, output):
        captured["a"] = output[0].detach().clone()

    handle = module.register_forward_hook(keep)
    try:
        with torch.no_grad():
            demo(model_image(cat, demo).tensor())
    finally:
        handle.remove()
    np.testing.assert_allclose(maps.maps, captured["a"][torch.from_numpy(maps.channels)].numpy(), atol=1e-5)
    np.testing.assert_allclose(maps.strength, captured["a"].mean((1, 2))[torch.from_numpy(maps.channels)].numpy(),
                               atol=1e-6)
    assert explain.feature_maps(demo, cat, layer, top=5).maps.shape == (5,) + shape[1:]


def test_upsample_keeps_a_constant_and_the_size(demo):
    assert explain.upsample(np.full((7, 7), 2.0), 224).shape == (224, 224)
    np.testing.assert_allclose(explain.upsample(np.full((7, 7), 2.0), 50), 2.0, rtol=1e-6)
