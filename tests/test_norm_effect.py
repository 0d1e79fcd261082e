"""alexnet.norm_effect: the maps before and after the norm are the norm's real input and output."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet import explain, imagenet, norm_effect
from alexnet.checkpoints import load_model
from alexnet.images import load_image, to_cifar_array
from alexnet.inputs import model_image
from alexnet.models import build
from alexnet.predict import DEMO_WEIGHTS, EXAMPLES_DIR

pytestmark = pytest.mark.usefixtures("one_thread")  # one thread, as these views compute in the app; put back after


@pytest.fixture(scope="module")
def cat():
    return to_cifar_array(load_image(EXAMPLES_DIR / "chelsea.png"), 32)


def relu_output(model, image, title: str) -> np.ndarray:
    """The rectified maps of a conv, by running the layers up to its ReLU by hand."""
    conv = explain.find_layer(model, title)
    with torch.no_grad():
        return model.features[:conv.index + 2](model_image(image, model).tensor())[0].numpy()


def lrn_by_hand(a: np.ndarray, n: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> np.ndarray:
    """The 2012 paper's formula, channel by channel: b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta."""
    channels = len(a)
    out = np.empty_like(a, dtype=np.float64)
    for i in range(channels):
        window = a[max(0, i - n // 2):min(channels, i + n // 2 + 1)].astype(np.float64)
        out[i] = a[i] / (k + alpha * (window ** 2).sum(axis=0)) ** beta
    return out


def test_lrn_after_is_the_papers_formula_applied_to_before(cat):
    torch.manual_seed(0)
    model = build("cifar", "lrn").eval()
    stages = norm_effect.norm_effect(model, cat)
    assert [(s.layer, s.norm) for s in stages] == [("conv1", "lrn"), ("conv2", "lrn")]
    for stage in stages:
        np.testing.assert_allclose(stage.before, relu_output(model, cat, stage.layer), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stage.after, lrn_by_hand(stage.before), rtol=1e-4, atol=1e-6)
        assert (stage.after <= stage.before / 2 ** 0.75 + 1e-6).all()      # divided by at least k^beta
        assert "lateral inhibition" in stage.description and "(2 + 0.0001 x" in stage.description


def test_bn_after_is_the_running_statistics_applied_to_before(cat):
    demo = load_model(DEMO_WEIGHTS)
    stages = norm_effect.norm_effect(demo, cat)
    assert [(s.layer, s.norm) for s in stages] == [("conv1", "bn"), ("conv2", "bn")]
    for stage in stages:
        bn = demo.features[explain.find_layer(demo, stage.layer).index + 2]
        mean, var = bn.running_mean.numpy()[:, None, None], bn.running_var.numpy()[:, None, None]
        weight, bias = bn.weight.detach().numpy()[:, None, None], bn.bias.detach().numpy()[:, None, None]
        expected = (stage.before - mean) / np.sqrt(var + bn.eps) * weight + bias
        np.testing.assert_allclose(stage.after, expected, rtol=1e-4, atol=1e-5)
        stats = stage.statistics()
        np.testing.assert_allclose(stats["mean_after"], expected.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats["std_before"], stage.before.std(axis=(1, 2)), rtol=1e-5)
        assert "batch" in stage.description
    assert not demo.training


def test_no_norm_changes_nothing_and_the_imagenet_model_has_no_place_for_one(cat):
    torch.manual_seed(0)
    stages = norm_effect.norm_effect(build("cifar", "none").eval(), cat)
    assert [s.norm for s in stages] == ["none", "none"]
    assert all(np.array_equal(s.before, s.after) for s in stages)
    assert norm_effect.norm_effect(imagenet.build_model().eval(), np.zeros((224, 224, 3), np.uint8)) == []


def test_a_model_in_training_mode_is_read_in_eval_mode_and_left_as_it_was(cat):
    torch.manual_seed(0)
    model = build("cifar", "bn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norm_effect.norm_effect(model, cat)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # running stats untouched
