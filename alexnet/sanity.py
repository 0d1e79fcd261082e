"""Does a map explain this model? The model-randomisation test of Adebayo et al. (2018), "Sanity checks for
saliency maps".

On a copy of the model (never the shared one), the layers with learned weights are randomised one at a time
from the top (fc8, fc7, fc6, conv5 ... conv1), each keeping the ones above it random (the paper's cascading
randomisation), and the method draws its map again at a handful of stops on the way down (by default after
fc8, fc6, conv5, conv3 and conv1: six maps with the trained one, cheap enough for a page). Similarity to the trained
model's map is the Spearman rank correlation of the maps' absolute values, as in the paper. A map that still
looks the same once every weight is random shows the image (edges, colour), not what the network learned:
it "does not depend on the weights".

Random weights are drawn from a normal distribution with the layer's own standard deviation (the paper
re-initialises them), so activations keep their scale and a map does not vanish merely because they shrank.
Norm layers (BN's statistics and scale) are kept: the question is what the learned filters contribute.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .attributions import Method, method_named
from .explain import class_to_explain, conv_layers
from .inputs import ImageLike, ModelImage, model_image
from .predict import model_in_use

__all__ = ["SIMILAR", "RandomisationCheck", "learned_layers", "default_stops", "rank_similarity", "randomisation_check"]

SIMILAR = 0.5
"""Rank correlation with the trained model's map, once every layer is random, from which a method is labelled
as not explaining the model. On the demo model (conv5, class predicted, a few CIFAR-10 test images) Grad-CAM
ends between -0.4 and 0.2 and SmoothGrad of absolute gradients between 0.5 and 0.85."""


def learned_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The conv and fully connected layers, input to output, named as in the paper (conv1.., then fc6..)."""
    convs = [(layer.title, model.features[layer.index]) for layer in conv_layers(model)]
    linears = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
    first = 6 if len(convs) == 5 else len(convs) + 1
    return convs + [(f"fc{first + i}", m) for i, m in enumerate(linears)]


def default_stops(model: nn.Module) -> tuple[str, ...]:
    """Where the cascade draws the map: the top layer, the lowest fully connected one, the top, middle and
    first conv layers (fc8, fc6, conv5, conv3, conv1 for the variants here)."""
    names = [name for name, _ in learned_layers(model)]
    convs = [name for name in names if name.startswith("conv")]
    fcs = names[len(convs):]
    return tuple(dict.fromkeys([fcs[-1], fcs[0], convs[-1], convs[len(convs) // 2], convs[0]]))


def _randomise(layer: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for param in (layer.weight, layer.bias):
            if param is not None:
                noise = torch.randn(param.shape, generator=generator, device=param.device)
                param.copy_(noise * param.float().std(correction=0))


def rank_similarity(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation of two maps' absolute values (ties share ranks). A map with no variation has
    no ranks to correlate: 1.0 when both are flat (nothing changed), else 0.0 (the structure is gone)."""
    a, b = np.abs(first).ravel(), np.abs(second).ravel()
    flat_a, flat_b = np.ptp(a) == 0, np.ptp(b) == 0
    if flat_a or flat_b:
        return 1.0 if flat_a and flat_b else 0.0
    from scipy.stats import spearmanr  # here: scipy's import is 0.3 s of every process that imports this module

    return float(spearmanr(a, b).statistic)


@dataclass(frozen=True)
class RandomisationCheck:
    method: str
    layer: str | None            # the conv layer explained, for layer methods
    target: int
    stops: tuple[str, ...]       # each map after the first is drawn once every layer from the top down to this
                                 # one is random
    maps: np.ndarray             # (1 + stops) x H x W: the trained model's map, then the map at each stop
    similarity: tuple[float, ...]  # rank correlation of each stop's map with the trained model's
    threshold: float = SIMILAR

    @property
    def explains(self) -> bool:
        """False when the map stays similar with every learned layer random."""
        return self.similarity[-1] < self.threshold

    @property
    def verdict(self) -> str:
        final = self.similarity[-1]
        if self.explains:
            return (f"{self.method} depends on the weights: with every layer random its map's rank correlation "
                    f"with this model's map falls to {final:.2f}, so it shows something this model learned.")
        return (f"{self.method} does not depend on the weights: not an explanation of this model. With every "
                f"layer random its map keeps a rank correlation of {final:.2f} with this model's map.")


def randomisation_check(model: nn.Module, image: ImageLike | ModelImage, method: str | Method, target: int | None = None,
                        layer: str | None = None, stops: Sequence[str] | None = None, seed: int = 0,
                        threshold: float = SIMILAR) -> RandomisationCheck:
    """Cascading randomisation from the top on a copy of `model`, with `method`'s map at each of `stops`
    (layer names; default `default_stops`). The last stop should be the first layer, so that every weight
    is random when the verdict is read."""
    chosen = method_named(method)
    layer = layer if chosen.uses_layer else None
    image = model_image(image, model)   # prepared once: the copy takes it as the model does
    target = class_to_explain(model, image, target)
    original = chosen.compute(model, image, layer, target)
    with model_in_use(model):
        twin = copy.deepcopy(model).eval()
    stops = tuple(stops or default_stops(twin))
    cascade = learned_layers(twin)[::-1]
    unknown = set(stops) - {name for name, _ in cascade}
    if unknown:
        raise ValueError(f"{', '.join(sorted(unknown))}: not a layer of this model")
    generator = torch.Generator(device=next(twin.parameters()).device).manual_seed(seed)
    maps = [original.values]
    for name, module in cascade:
        _randomise(module, generator)
        if name in stops:
            maps.append(chosen.compute(twin, image, layer, target).values)
    similarity = tuple(rank_similarity(maps[0], m) for m in maps[1:])
    ordered = tuple(name for name, _ in cascade if name in stops)
    return RandomisationCheck(chosen.name, original.layer, target, ordered, np.stack(maps), similarity, threshold)
