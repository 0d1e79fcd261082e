"""Activation maximisation: a picture that a channel (or a class) responds to most, after Olah et al. (2017).

As in their Lucid library and its PyTorch port Lucent, the picture is not optimised pixel by
pixel, which gives high-frequency noise that excites a unit without showing anything:
- it is parameterised in Fourier space, each frequency scaled by 1/f, so that Adam's equal
  steps on every parameter make natural-image-like (1/f) changes;
- its colours are decorrelated: the parameters are in a colour basis whose channels are
  uncorrelated in natural images (Lucid's ImageNet colour-correlation matrix, its square root
  from an SVD), mapped back to RGB, then squashed into [0, 1] by a sigmoid;
- at each step the picture is shifted, scaled and rotated at random (transformation
  robustness), so only features that survive small moves are kept.

The objective of a channel is the mean of its conv output over the map (before the ReLU, so a
channel silent on the start picture still has a gradient); the value reported is the mean of
its activation after the ReLU, the one the feature maps show. A class's objective is its
logit. Sizes follow the picture the model is given: 32x32 for a model trained on CIFAR-10
(upsampled to its input size as its training images were), 224x224 for the ImageNet model.
The model is only read: gradients go to the picture's parameters alone (`torch.autograd.grad`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import analysis
from .data import normalization, scaled_to_model_input, to_model_input
from .explain import activation_module, find_layer
from .inputs import image_size
from .predict import class_names, model_device, model_in_use

# Lucid's colour correlation of ImageNet images, square root by SVD (lucid/optvis/param/color.py).
COLOR_CORRELATION_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]],
                                        dtype=np.float32)
STEPS = 256                 # Adam steps; Lucid's default is 512 at 224x224, a 32x32 picture settles sooner
LEARNING_RATE = 0.05        # Lucid's and Lucent's default
SPECTRUM_SD = 0.01          # spread of the random start's Fourier coefficients (Lucid's default)

StepHandler = Callable[[int, int], None]      # (steps done, steps in all)


@dataclass(frozen=True)
class Objective:
    """What to maximise: a channel of a conv layer, or a class's logit."""
    layer: str | None = None       # conv1..conv5, for a channel
    channel: int | None = None
    klass: int | None = None

    def __post_init__(self) -> None:
        if (self.klass is None) == (self.layer is None or self.channel is None):
            raise ValueError("an objective is a layer and a channel, or a class")

    def describe(self, classes: tuple[str, ...] | None = None) -> str:
        if self.klass is not None:
            return f"class {classes[self.klass] if classes else self.klass} (its logit)"
        return f"{self.layer} channel {self.channel} (its mean activation)"


@dataclass(frozen=True)
class Visualization:
    objective: Objective
    image: np.ndarray       # S x S x 3 uint8
    value: float            # the objective's value on the picture: mean activation after the ReLU, or the logit
    start_value: float      # the same on the random start picture (same seed, before any step)
    steps: int
    seed: int


class FourierImage(nn.Module):
    """A batch of pictures in [0, 1], parameterised by 1/f-scaled Fourier coefficients in a decorrelated
    colour basis (Lucid's `fft_image` and `to_valid_rgb(decorrelate=True)`)."""

    def __init__(self, side: int, generator: torch.Generator, batch: int = 1, decay_power: float = 1.0) -> None:
        super().__init__()
        fy = torch.fft.fftfreq(side)[:, None]
        fx = torch.fft.rfftfreq(side)[None, :]
        frequencies = torch.sqrt(fx * fx + fy * fy)
        self.side = side
        self.register_buffer("scale", (1.0 / torch.clamp(frequencies, min=1.0 / side) ** decay_power)[..., None])
        shape = (batch, 3) + tuple(frequencies.shape) + (2,)
        self.spectrum = nn.Parameter(torch.randn(shape, generator=generator) * SPECTRUM_SD)
        colors = torch.from_numpy(COLOR_CORRELATION_SVD_SQRT)
        self.register_buffer("colors", colors / colors.norm(dim=0).max())

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.scale * self.spectrum)
        decorrelated = torch.fft.irfftn(spectrum, s=(self.side, self.side), norm="ortho") / 4.0   # Lucid's 4
        rgb = torch.einsum("bchw,dc->bdhw", decorrelated, self.colors)
        return torch.sigmoid(rgb)


def random_transform(pictures: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift by up to a sixteenth of the side, scale by 0.95-1.05 and rotate by up to 5 degrees, at random
    (Lucid's standard transforms, scaled to the picture's side); what moves in from outside is grey."""
    n, side = len(pictures), pictures.shape[-1]
    rand = torch.rand(n, 4, generator=generator).to(pictures.device)
    angle = (rand[:, 0] * 2 - 1) * math.radians(5)
    scale = 0.95 + rand[:, 1] * 0.1
    shift = (rand[:, 2:] * 2 - 1) * (2 / 16)          # in [-1, 1] coordinates: 1/16 of the side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [n, 3, side, side], align_corners=False)
    return F.grid_sample(pictures - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def _scores(model: nn.Module, objective: Objective, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(what is maximised, what is reported) for each picture: conv output mean and its ReLU'd mean, or the logit."""
    if objective.klass is not None:
        logit = model(x)[:, objective.klass]
        return logit, logit
    layer = find_layer(model, objective.layer)
    conv_out = model.features[:layer.index + 1](x)[:, objective.channel]
    activation = activation_module(model, layer)       # the ReLU after the conv (the conv itself if none)
    rectified = conv_out if activation is model.features[layer.index] else activation(conv_out)
    return conv_out.mean(dim=(1, 2)), rectified.mean(dim=(1, 2))


def check_objective(model: nn.Module, objective: Objective) -> None:
    """A clear error for a channel or class the model does not have."""
    if objective.klass is not None:
        count = len(class_names(model))
        if not 0 <= objective.klass < count:
            raise ValueError(f"class {objective.klass} does not exist: the model has {count} classes")
        return
    layer = find_layer(model, objective.layer)
    if not 0 <= objective.channel < layer.out_channels:
        raise ValueError(f"{layer.title} has channels 0 to {layer.out_channels - 1}, not {objective.channel}")


def maximize(model: nn.Module, objective: Objective, steps: int = STEPS, seed: int = 0,
             learning_rate: float = LEARNING_RATE, on_step: StepHandler | None = None) -> Visualization:
    """The picture that maximises `objective` after `steps` Adam steps from a seeded random start."""
    check_objective(model, objective)
    generator = torch.Generator().manual_seed(seed)
    picture = FourierImage(image_size(model), generator).to(model_device(model))
    optimizer = torch.optim.Adam(picture.parameters(), lr=learning_rate)
    size, stats = model.input_size, normalization(model)
    with model_in_use(model):
        start_value = _value(model, objective, picture())
        with torch.enable_grad():
            for step in range(steps):
                moved = scaled_to_model_input(random_transform(picture(), generator), size, *stats)
                target = _scores(model, objective, moved)[0]
                (gradient,) = torch.autograd.grad(-target.sum(), [picture.spectrum])
                picture.spectrum.grad = gradient
                optimizer.step()
                if on_step is not None:
                    on_step(step + 1, steps)
        final = picture().detach()
        value = _value(model, objective, final)
    return Visualization(objective, _uint8(final)[0].permute(1, 2, 0).cpu().numpy(), value, start_value, steps, seed)


def _uint8(pictures: torch.Tensor) -> torch.Tensor:
    return (pictures.detach().clamp(0, 1) * 255).round().to(torch.uint8)


@torch.no_grad()
def _value(model: nn.Module, objective: Objective, pictures: torch.Tensor) -> float:
    """The reported value on the first picture as it is saved: rounded to 8 bits."""
    x = to_model_input(_uint8(pictures), model.input_size, *normalization(model))
    return float(_scores(model, objective, x)[1][0])


# ---- kept in the subject's analysis folder (alexnet/analysis.py) ----

def picture_name(objective: Objective) -> str:
    """The file name of an objective's picture: maximise-conv3-17.png, maximise-class-3.png."""
    if objective.klass is not None:
        return f"maximise-class-{objective.klass}.png"
    return f"maximise-{objective.layer}-{objective.channel}.png"


def save_visualization(subject: analysis.Subject, result: Visualization) -> None:
    meta = {"objective": asdict(result.objective), "value": result.value, "start_value": result.start_value,
            "steps": result.steps, "seed": result.seed}
    analysis.save_picture(subject.path(picture_name(result.objective)), result.image, meta, subject)


def load_visualization(subject: analysis.Subject, objective: Objective) -> Visualization | None:
    """The cached picture of `objective` for this subject, or None when missing or stale."""
    found = analysis.load_picture(subject.path(picture_name(objective)), subject)
    if found is None:
        return None
    image, meta = found
    return Visualization(objective, image, meta["value"], meta["start_value"], meta["steps"], meta["seed"])
