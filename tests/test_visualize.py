"""alexnet.visualize: activation maximisation raises what it maximises, is seeded, and leaves the model alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet import analysis, explain, visualize
from alexnet.checkpoints import load_model
from alexnet.data import SAMPLE_DIR, source_at
from alexnet.predict import DEMO_WEIGHTS, predict
from model_checks import assert_behaves_like

pytestmark = pytest.mark.usefixtures("one_thread")  # one thread, as these views compute in the app; put back after
STEPS = 40      # a few dozen: the app's default is visualize.STEPS


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_WEIGHTS)


def channel_mean(model, image: np.ndarray, layer: str, channel: int) -> float:
    """The channel's mean activation after its ReLU, as the Explain page's feature maps compute it."""
    maps = explain.feature_maps(model, image, layer)
    return float(maps.strength[list(maps.channels).index(channel)])


@pytest.mark.parametrize("layer, channel", [("conv2", 0), ("conv3", 12), ("conv5", 18)])
def test_a_channels_picture_raises_its_mean_activation_tenfold_over_the_random_start(demo, layer, channel):
    result = visualize.maximize(demo, visualize.Objective(layer, channel), steps=STEPS, seed=0)
    start = visualize.maximize(demo, visualize.Objective(layer, channel), steps=0, seed=0)   # drawn the same way
    assert result.image.shape == (32, 32, 3) and result.image.dtype == np.uint8
    assert result.start_value == pytest.approx(start.value, abs=1e-6)
    reached = channel_mean(demo, result.image, layer, channel)
    assert reached == pytest.approx(result.value, rel=1e-4, abs=1e-6)
    assert channel_mean(demo, start.image, layer, channel) == pytest.approx(start.value, rel=1e-4, abs=1e-6)
    assert reached >= 10 * start.value and reached > 0.1, (reached, start.value)


def test_a_class_picture_raises_its_logit_and_is_mostly_answered_as_the_class(demo):
    """The logit, as Lucid maximises it: other classes' logits may rise with it (for the demo, the horse's picture
    is answered as a dog: its features are a dog's too), so most pictures, not all, are answered as their class;
    the page says what the model answers for each."""
    answered = 0
    for klass in range(10):
        result = visualize.maximize(demo, visualize.Objective(klass=klass), steps=STEPS, seed=0)
        assert result.value > result.start_value + 10, klass
        answered += predict(demo, result.image).index == klass
    assert answered >= 8


def test_the_same_seed_gives_the_same_picture_and_another_seed_another(demo):
    objective = visualize.Objective("conv3", 5)
    first, second = (visualize.maximize(demo, objective, steps=8, seed=3) for _ in range(2))
    np.testing.assert_array_equal(first.image, second.image)
    assert not np.array_equal(first.image, visualize.maximize(demo, objective, steps=8, seed=4).image)


def test_maximising_leaves_the_shared_model_exactly_as_it_was(demo):
    before = {k: v.clone() for k, v in demo.state_dict().items()}
    visualize.maximize(demo, visualize.Objective("conv4", 1), steps=4)
    assert not demo.training
    assert_behaves_like(demo, load_model(DEMO_WEIGHTS), side=32)   # no hook left behind
    assert all(p.grad is None for p in demo.parameters())
    assert all(torch.equal(before[k], v) for k, v in demo.state_dict().items())


def test_a_channel_or_class_the_model_lacks_gets_a_message(demo):
    with pytest.raises(ValueError, match="conv1 has channels 0 to 63, not 64"):
        visualize.maximize(demo, visualize.Objective("conv1", 64), steps=1)
    with pytest.raises(ValueError, match="the model has 10 classes"):
        visualize.maximize(demo, visualize.Objective(klass=10), steps=1)
    with pytest.raises(ValueError, match="is not a conv layer"):
        visualize.maximize(demo, visualize.Objective("fc6", 0), steps=1)
    with pytest.raises(ValueError, match="a layer and a channel, or a class"):
        visualize.Objective("conv1", 0, 3)


def test_the_picture_is_kept_as_png_with_what_it_came_from(demo, runs_dir):
    subject = analysis.subject(DEMO_WEIGHTS, source_at(SAMPLE_DIR), runs_dir)
    objective = visualize.Objective("conv3", 12)
    assert visualize.load_visualization(subject, objective) is None
    result = visualize.maximize(demo, objective, steps=4)
    visualize.save_visualization(subject, result)
    kept = visualize.load_visualization(subject, objective)
    np.testing.assert_array_equal(kept.image, result.image)
    assert (kept.value, kept.start_value, kept.steps) == (result.value, result.start_value, 4)
    assert subject.path("maximise-conv3-12.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
