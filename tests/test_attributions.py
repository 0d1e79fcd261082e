"""alexnet.attributions and alexnet.sanity on the demo model and real CIFAR-10 test images.

Each CAM is recomputed here from its paper's formula, on a separately loaded copy of the demo model, from
activations that a plain forward hook keeps and gradients from `torch.autograd.grad`, written with numpy;
occlusion is checked by hiding the regions its map ranks first and last, SmoothGrad by redoing its average
over the same seeded noise, the sanity check by Grad-CAM (whose map must change) and by an edge detector
that never looks at the weights (which must be labelled as not explaining the model).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexnet import attributions, explain, sanity
from alexnet.attributions import METHODS, attribute
from alexnet.checkpoints import load_model
from alexnet.inputs import model_image
from alexnet.models import build
from alexnet.predict import DEMO_WEIGHTS
from model_checks import assert_behaves_like

pytestmark = [pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU"),
              pytest.mark.filterwarnings("ignore:.*required_grads has been set automatically")]

CAMS = ("Grad-CAM++", "Layer-CAM", "Score-CAM", "Eigen-CAM")


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_WEIGHTS)


@pytest.fixture(scope="module")
def reference():
    """A second copy of the demo model for the hand computations: nothing they do can touch `demo`."""
    return load_model(DEMO_WEIGHTS)


@pytest.fixture(scope="module")
def images(mini_data):
    """The first eight CIFAR-10 test images of the real subset, 32x32x3 uint8."""
    return [mini_data.test_x[i].permute(1, 2, 0).numpy() for i in range(8)]


def hooked(model, image, layer: str, target: int):
    """(A, dS/dA, S) for one image: A the rectified activations of `layer` (K x h x w numpy), from a plain
    forward hook; the gradient of the class score with respect to them from torch.autograd.grad."""
    conv = explain.find_layer(model, layer)
    module = model.features[conv.index + 1]
    assert isinstance(module, torch.nn.ReLU)
    kept = []
    handle = module.register_forward_hook(lambda m, args, out: kept.append(out))
    try:
        score = model(model_image(image, model).tensor())[0, target]
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(score, kept[0])
    return kept[0][0].detach().double().numpy(), grad[0].double().numpy(), float(score.detach())


def to_input_size(cam: np.ndarray, side: int = 32) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)[0, 0].numpy()


def unit(values: np.ndarray) -> np.ndarray:
    return values / values.max()


# ---- each CAM against its paper's formula ----

def paper_grad_cam_plus_plus(a, g, score):
    """Chattopadhay et al. 2018, eq. 19 and 10, with Y = exp(S) kept: its derivatives are exp(S) g, exp(S) g^2,
    exp(S) g^3 for a piecewise-linear network."""
    y1, y2, y3 = np.exp(score) * g, np.exp(score) * g ** 2, np.exp(score) * g ** 3
    denominator = 2 * y2 + a.sum(axis=(1, 2), keepdims=True) * y3
    alpha = np.divide(y2, denominator, out=np.zeros_like(y2), where=denominator != 0)
    w = (alpha * np.maximum(y1, 0)).sum(axis=(1, 2))
    return np.maximum(np.einsum("k,kij->ij", w, a), 0)


def paper_layer_cam(a, g, score):
    """Jiang et al. 2021: M = ReLU(sum_k relu(g_k) * A_k), element by element."""
    return np.maximum((np.maximum(g, 0) * a).sum(axis=0), 0)


def paper_eigen_cam(a, g, score):
    """Muhammad & Yeasin 2020: the (h*w x K) activations times their first right singular vector, its sign
    chosen so that the vector's entries add up to a positive number."""
    k, h, w = a.shape
    flat = a.reshape(k, -1).T
    v = np.linalg.svd(flat, full_matrices=False)[2][0]
    return np.maximum(flat @ (v if v.sum() >= 0 else -v), 0).reshape(h, w)


@pytest.mark.parametrize("method, formula", [("Grad-CAM++", paper_grad_cam_plus_plus),
                                             ("Layer-CAM", paper_layer_cam), ("Eigen-CAM", paper_eigen_cam)])
@pytest.mark.parametrize("layer", ["conv5", "conv3", "conv1"])
def test_gradient_cams_equal_the_papers_formulas(demo, reference, images, method, formula, layer):
    for image, target in ((images[0], 3), (images[1], 8)):
        expected = to_input_size(formula(*hooked(reference, image, layer, target)))
        result = attribute(demo, image, target, layer, method=method)
        assert result.layer == layer and result.values.shape == (32, 32) and result.problem is None
        np.testing.assert_allclose(unit(result.values), unit(expected), rtol=1e-4, atol=1e-5)


def paper_score_cam(model, image, layer, target):
    """Score-CAM as the authors' released code computes it, one channel at a time: upsample the channel,
    skip it if constant, scale it to [0, 1], mask the input, weigh the upsampled channel by the class's
    softmax probability on that masked input; ReLU of the sum."""
    a = hooked(model, image, layer, target)[0]
    x = model_image(image, model).tensor()
    total = np.zeros((32, 32))
    for channel in a:
        up = to_input_size(channel).astype(np.float64)
        if up.max() == up.min():
            continue
        mask = torch.from_numpy(((up - up.min()) / (up.max() - up.min())).astype(np.float32))
        with torch.no_grad():
            p = torch.softmax(model(x * mask), dim=1)[0, target].item()
        total += p * up
    return np.maximum(total, 0)


@pytest.mark.parametrize("layer", ["conv5", "conv1"])
def test_score_cam_equals_the_authors_formula(demo, reference, images, layer):
    expected = paper_score_cam(reference, images[2], layer, 5)
    result = attribute(demo, images[2], 5, layer, method="Score-CAM")
    np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-5 * expected.max())


def test_eigen_cam_follows_the_activations_on_every_image(demo, reference, images):
    """The first component's sign is the SVD's choice. Taken the right way round, a component of non-negative
    activations is positive wherever the layer is active, and largest where its activations are largest
    (pytorch_grad_cam's centred version keeps only one half, reversed on test image #4)."""
    for image in images:
        a = hooked(reference, image, "conv5", 0)[0]
        eigen = attribute(demo, image, None, "conv5", method="Eigen-CAM").values
        assert (a.sum(axis=0) > 0).all() and (eigen > 0).all()
        assert sanity.rank_similarity(eigen, to_input_size(np.linalg.norm(a, axis=0))) > 0.5


def detail(values: np.ndarray) -> float:
    """The share of a 32x32 map that no 7x7 map blown up bilinearly to 32x32 holds (least squares)."""
    basis = np.stack([to_input_size(np.eye(49)[i].reshape(7, 7)).ravel() for i in range(49)], axis=1)
    fit = basis @ np.linalg.lstsq(basis, values.ravel(), rcond=None)[0]
    return float(np.linalg.norm(values.ravel() - fit) / np.linalg.norm(values))


def test_maps_at_conv1_keep_the_input_resolution(demo, images):
    """conv1's maps are 32x32: a CAM there is not conv5's 7x7 map blown up."""
    for name in CAMS:
        fine = attribute(demo, images[0], 3, "conv1", method=name).values
        coarse = attribute(demo, images[0], 3, "conv5", method=name).values
        assert detail(fine) > 0.1 and detail(coarse) < 1e-5, name


# ---- occlusion and SmoothGrad ----

def score_with_patch(model, image, target, centre, size=8) -> float:
    """The class score with a size x size square around `centre` set to the dataset's mean colour."""
    x = model_image(image, model).tensor().clone()
    top = int(np.clip(centre[0] - size // 2, 0, 32 - size))
    left = int(np.clip(centre[1] - size // 2, 0, 32 - size))
    x[:, :, top:top + size, left:left + size] = 0.0
    with torch.no_grad():
        return float(model(x)[0, target])


def test_occlusion_ranks_the_regions_by_what_hiding_them_costs(demo, reference, images):
    for image in images[:4]:
        result = attribute(demo, image, None, method="Occlusion")
        assert result.layer is None and result.values.shape == (32, 32)
        values = result.values
        most = np.unravel_index(np.argmax(values), values.shape)
        least = np.unravel_index(np.argmin(values), values.shape)
        assert score_with_patch(reference, image, result.target, most) < \
            score_with_patch(reference, image, result.target, least)


def test_smooth_grad_is_the_mean_saliency_over_the_same_seeded_noise(demo, reference, images):
    image, target, samples = images[3], 1, 6
    state = torch.get_rng_state()
    result = attributions.smooth_grad(demo, image, None, target, samples=samples, seed=7)
    assert torch.equal(torch.get_rng_state(), state)            # the caller's random state is untouched

    x = model_image(image, reference).tensor()
    std = attributions.SMOOTHGRAD_NOISE * float(x.max() - x.min())
    torch.manual_seed(7)
    noise = torch.normal(0.0, torch.full((samples,) + tuple(x.shape[1:]), std))
    maps = []
    for n in noise:
        noisy = (x + n).requires_grad_(True)
        (grad,) = torch.autograd.grad(reference(noisy)[0, target], noisy)
        maps.append(grad[0].abs())
    expected = torch.stack(maps).mean(0).amax(0).numpy()
    np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-6 * expected.max())
    again = attributions.smooth_grad(demo, image, None, target, samples=samples, seed=7)
    assert np.array_equal(again.values, result.values)


# ---- the entry point ----

def test_every_method_draws_a_map_at_the_input_size_and_says_what_it_is(demo, images):
    for name, method in METHODS.items():
        result = attribute(demo, images[5], None, "conv4", method=name)
        assert result.method == name and result.computes == method.computes and result.computes
        assert result.layer == ("conv4" if method.uses_layer else None)
        assert result.values.shape == (32, 32) and result.problem is None
        assert method.signed or result.values.min() >= 0
    with pytest.raises(ValueError, match="Score-CAM"):
        attribute(demo, images[0], 0, method="Jet-CAM")


def test_eigen_cam_is_the_same_for_every_class_and_the_others_are_not(demo, images):
    for name, method in METHODS.items():
        first, second = (attribute(demo, images[6], target, "conv5", method=name).values for target in (0, 6))
        assert np.array_equal(first, second) == (not method.class_specific), name


def test_no_method_changes_the_model(images, reference):
    model = load_model(DEMO_WEIGHTS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for name in METHODS:
        attribute(model, images[7], 2, "conv2", method=name)
        assert model.training, name
    model.eval()
    sanity.randomisation_check(model, images[7], "Grad-CAM", 2, "conv5")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert_behaves_like(model, reference, 32)


def test_frozen_weights_still_give_gradient_maps(images):
    model = load_model(DEMO_WEIGHTS).requires_grad_(False)
    for name in ("Grad-CAM++", "Layer-CAM"):
        assert attribute(model, images[0], 3, "conv3", method=name).problem is None


def test_the_paper_variant_gets_maps_at_227(images):
    torch.manual_seed(0)
    paper = build("paper", "lrn", init="torch").eval()
    for name in ("Grad-CAM++", "Eigen-CAM", "Occlusion"):
        assert attribute(paper, images[0], 3, "conv2", method=name).values.shape == (227, 227)
    assert attributions.occlusion_window(227) == (59, 28)


# ---- the sanity check ----

def test_randomising_the_weights_changes_grad_cams_map_on_the_demo_model(demo, images):
    for image in images[:3]:
        check = sanity.randomisation_check(demo, image, "Grad-CAM", None, "conv5")
        assert check.stops == ("fc8", "fc6", "conv5", "conv3", "conv1")
        assert check.maps.shape == (6, 32, 32)
        np.testing.assert_array_equal(check.maps[0], explain.grad_cam(demo, image, "conv5", check.target).values)
        assert check.similarity[-1] < 0.5 and check.explains
        assert "depends on the weights" in check.verdict


def edges(model, image, layer, target):
    """A Sobel edge detector on the image's grey levels: a 'saliency map' that never runs the model."""
    grey = model_image(image, model).pixels.astype(np.float64).mean(axis=2)
    gy, gx = np.gradient(grey)
    return explain.Attribution("Edges", None, target, np.hypot(gx, gy))


def test_a_method_that_ignores_the_weights_is_labelled_as_not_explaining(demo, images):
    edge_detector = attributions.Method("Edges", "where the grey level changes fastest", False, False, False, edges)
    check = sanity.randomisation_check(demo, images[0], edge_detector, 3)
    assert check.similarity == pytest.approx((1.0,) * 5)
    assert not check.explains
    assert check.verdict.startswith("Edges does not depend on the weights: not an explanation of this model")


def test_the_cascade_randomises_from_the_top(demo):
    assert [name for name, _ in sanity.learned_layers(demo)] == \
        ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    with pytest.raises(ValueError, match="fc9"):
        sanity.randomisation_check(demo, np.zeros((32, 32, 3), np.uint8), "Grad-CAM", 0, stops=("fc9",))


def test_rank_similarity_reads_absolute_values_and_flat_maps():
    ramp = np.arange(16.0).reshape(4, 4)
    assert sanity.rank_similarity(ramp, -ramp) == pytest.approx(1.0)        # |map|: the sign is not compared
    assert sanity.rank_similarity(ramp, 15 - ramp) == pytest.approx(-1.0)
    assert sanity.rank_similarity(ramp, np.zeros((4, 4))) == 0.0              # a map that vanished changed
    assert sanity.rank_similarity(np.ones((4, 4)), np.zeros((4, 4))) == 1.0
