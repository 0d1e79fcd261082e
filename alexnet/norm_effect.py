"""What the norm layer does to an image's feature maps: conv1's and conv2's maps just before and just after it.

The variants here put their norm (`models.NORMS`: LRN, BN or none) after the ReLU of conv1
and conv2, as the 2012 paper put local response normalisation. For one image this gives, at
both places, the rectified maps that enter the norm and the maps that leave it, with each
channel's mean and standard deviation over the map before and after: LRN scales every
activation down by its neighbours across channels, BN moves and rescales each channel on its
own. A model without norm layers (torchvision's ImageNet AlexNet) has no such place.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .explain import conv_layers
from .lrn import LocalResponseNorm
from .inputs import ImageLike, ModelImage, model_image
from .predict import model_device, model_in_use

NORM_LAYERS = (LocalResponseNorm, nn.BatchNorm2d, nn.Identity)


def what_it_does(norm: nn.Module) -> str:
    """One sentence on what a norm layer does to the maps, with its own constants."""
    if isinstance(norm, LocalResponseNorm):
        return (f"LRN, the 2012 paper's local response normalisation: each activation is divided by ({norm.k:g} + "
                f"{norm.alpha:g} x the sum of the squares of the activations at the same place in the {norm.size} "
                f"channels around it, itself included)^{norm.beta:g}, so a strongly active channel damps its "
                "neighbours: the lateral inhibition of real neurons. The same for every image and every batch, "
                "nothing learnt, no sign changed.")
    if isinstance(norm, nn.BatchNorm2d):
        return ("BN, batch normalisation (2015): each channel on its own is shifted and scaled by the mean and "
                "variance of that channel over a training batch (at test time the running averages kept in "
                "training), then by a learnt scale and shift. Channels do not see each other; values can turn "
                "negative.")
    return "No norm: the rectified maps pass on unchanged (where the paper had LRN, this model has nothing)."


@dataclass(frozen=True)
class NormStage:
    """One norm layer's input and output for one image."""
    layer: str              # the conv it follows: conv1 or conv2
    norm: str               # lrn | bn | none
    before: np.ndarray      # channels x H x W: the ReLU's output, the norm's input
    after: np.ndarray       # channels x H x W: the norm's output
    description: str        # `what_it_does`

    def statistics(self) -> dict[str, np.ndarray]:
        """Each channel's mean and standard deviation over the map, before and after the norm."""
        return {"mean_before": self.before.mean(axis=(1, 2)), "mean_after": self.after.mean(axis=(1, 2)),
                "std_before": self.before.std(axis=(1, 2)), "std_after": self.after.std(axis=(1, 2))}


def _kind(module: nn.Module) -> str:
    if isinstance(module, LocalResponseNorm):
        return "lrn"
    return "bn" if isinstance(module, nn.BatchNorm2d) else "none"


def norm_positions(model: nn.Module) -> list[tuple[str, int]]:
    """(conv title, index in `model.features` of the norm layer) for each conv whose ReLU a norm layer follows."""
    features = list(model.features)
    found = []
    for layer in conv_layers(model):
        after = layer.index + 2                       # conv, ReLU, then the norm
        if after < len(features) and isinstance(features[layer.index + 1], nn.ReLU) \
                and isinstance(features[after], NORM_LAYERS):
            found.append((layer.title, after))
    return found


def norm_effect(model: nn.Module, image: ImageLike | ModelImage) -> list[NormStage]:
    """The maps before and after each norm layer of `model` for `image` (empty when it has no norm layers).

    One pass through `model.features` up to the last norm; the model is only read, in eval mode
    (`model_in_use`), so BN uses its running statistics as it does for any prediction.
    """
    positions = norm_positions(model)
    if not positions:
        return []
    x = model_image(image, model).tensor(model_device(model))
    stages, done = [], 0
    with model_in_use(model), torch.no_grad():
        for title, index in positions:
            before = model.features[done:index](x)
            x = model.features[index](before)
            done = index + 1
            norm = model.features[index]
            stages.append(NormStage(title, _kind(norm), before[0].float().cpu().numpy(), x[0].float().cpu().numpy(),
                                    what_it_does(norm)))
    return stages
