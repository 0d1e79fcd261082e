"""What the network learned and where it looks: filters, feature maps, Grad-CAM and other captum maps.

Every function takes a model that may be shared by many sessions, so none changes it:
each runs inside `predict.model_in_use` (eval mode, so BN uses its running statistics
and dropout is off; one caller at a time), gradients flow to the input only
(`torch.autograd.grad` in captum, so no parameter's `.grad` is touched), and every hook
that captum attaches is gone when the call returns, even when it fails.

A "conv layer" is named by its convolution ("features.0"); its activations are those
after the ReLU that follows it, the rectified feature maps that Grad-CAM was defined on.

captum is imported in the functions that use it: its import pulls matplotlib and sympy, half a
second of every process that imports this module, the trainer's and the command line's included.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .inputs import ImageLike, ModelImage, model_image
from .predict import model_device, model_in_use, probabilities

# Captum says these on every call; both are expected here (hooks are removed, inputs need gradients). The filters
# are installed once, at import, because warnings filters are one list for the whole process: `catch_warnings()`
# swaps that list on entry and puts its copy back on exit, so used per call by two sessions' threads at once it
# drops or brings back the other's filters. So no module here changes the filters per call (images.py checks
# Pillow's pixel limit itself rather than turn its warning into an error).
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU", module="captum")
warnings.filterwarnings("ignore", message=".*required_grads has been set automatically", module="captum")


@dataclass(frozen=True)
class ConvLayer:
    name: str             # module path, e.g. "features.0"
    title: str            # "conv1" .. "conv5"
    index: int            # position in model.features
    in_channels: int
    out_channels: int
    kernel_size: int
    groups: int


def conv_layers(model: nn.Module) -> list[ConvLayer]:
    """The conv layers of `model.features`, in order, named conv1..convN as in the paper."""
    convs = [(i, m) for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    return [ConvLayer(f"features.{i}", f"conv{n}", i, m.in_channels, m.out_channels, m.kernel_size[0], m.groups)
            for n, (i, m) in enumerate(convs, start=1)]


def find_layer(model: nn.Module, name: str | None) -> ConvLayer:
    """A conv layer by module name or title; None gives the last one (Grad-CAM's usual choice)."""
    layers = conv_layers(model)
    if name is None:
        return layers[-1]
    for layer in layers:
        if name in (layer.name, layer.title):
            return layer
    raise ValueError(f"{name!r} is not a conv layer of this model: choose one of "
                     f"{', '.join(layer.title for layer in layers)}")


def activation_module(model: nn.Module, layer: ConvLayer) -> nn.Module:
    """The ReLU right after the conv (its rectified output), or the conv itself if none follows."""
    after = model.features[layer.index + 1] if layer.index + 1 < len(model.features) else None
    return after if isinstance(after, nn.ReLU) else model.features[layer.index]


# ---- filters ----

def filter_weights(model: nn.Module, layer: str | None = None) -> np.ndarray:
    """The kernels of a conv layer, float32 out x in-per-group x k x k (a copy)."""
    conv = model.features[find_layer(model, layer).index]
    return conv.weight.detach().float().cpu().numpy().copy()


def rgb_filters(model: nn.Module) -> np.ndarray:
    """conv1's kernels as RGB images in [0, 1], out x k x k x 3.

    Each kernel is scaled by its own largest |weight| with zero at mid-grey, so a
    kernel's colours and edges show whatever its overall size; grey means no weight.
    """
    weights = filter_weights(model, conv_layers(model)[0].name)
    if weights.shape[1] != 3:
        raise ValueError(f"the first conv layer takes {weights.shape[1]} channels, not RGB")
    scale = np.abs(weights).reshape(len(weights), -1).max(axis=1).reshape(-1, 1, 1, 1)
    rgb = 0.5 + weights / (2 * np.where(scale > 0, scale, 1))
    return rgb.transpose(0, 2, 3, 1)


def tile(images: np.ndarray, columns: int, pad: int = 1, fill: float = np.nan) -> np.ndarray:
    """n x h x w (x 3) images to one mosaic, `columns` wide, with `pad` pixels of `fill` between tiles."""
    n, h, w = images.shape[:3]
    rows = max(-(-n // columns), 1)
    shape = (rows * (h + pad) - pad, columns * (w + pad) - pad) + images.shape[3:]
    mosaic = np.full(shape, fill, dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        mosaic[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = img
    return mosaic


def kernel_mosaic(weights: np.ndarray, filters: Sequence[int], columns: int = 32, pad: int = 1,
                  gap: int = 3) -> np.ndarray:
    """Channel by channel: for each chosen filter a block of its k x k kernels, one per input channel,
    `columns` to a row; blocks one under the other, `gap` NaN rows apart (NaN between tiles too)."""
    blocks = [tile(weights[f], columns=min(columns, weights.shape[1]), pad=pad) for f in filters]
    width = blocks[0].shape[1]
    spacer = np.full((gap, width), np.nan, dtype=np.float32)
    return np.concatenate([part for block in blocks for part in (block, spacer)][:-1])


# ---- feature maps ----

@dataclass(frozen=True)
class FeatureMaps:
    """One layer's activations for one image, strongest channel first."""
    layer: ConvLayer
    maps: np.ndarray          # channels x H x W, in `channels` order
    channels: np.ndarray      # original channel indices, strongest first
    strength: np.ndarray      # mean activation of each of those channels


def feature_maps(model: nn.Module, image: ImageLike | ModelImage, layer: str | None = None, top: int | None = None
                 ) -> FeatureMaps:
    """The rectified activations of a conv layer, channels sorted by mean activation (descending).

    Runs `model.features` only up to that layer's ReLU: a slice of the Sequential shares
    the modules, so nothing is attached to or changed on the model.
    """
    conv = find_layer(model, layer)
    stop = conv.index + 1 + (activation_module(model, conv) is not model.features[conv.index])
    x = model_image(image, model).tensor(model_device(model))
    with model_in_use(model), torch.no_grad():
        acts = model.features[:stop](x)[0].float().cpu()
    strength = acts.mean(dim=(1, 2))
    order = torch.argsort(strength, descending=True, stable=True)[:top]
    return FeatureMaps(conv, acts[order].numpy(), order.numpy(), strength[order].numpy())


# ---- attributions ----

@dataclass(frozen=True)
class Attribution:
    method: str
    layer: str | None         # conv title for layer methods
    target: int               # class index explained
    values: np.ndarray        # H x W (or H x W x 3 for Guided Grad-CAM), at the model's input size
    delta: float | None = None      # Integrated Gradients: sum of attributions minus the score gap
    score_gap: float | None = None  # Integrated Gradients: score(image) - score(black image)
    computes: str | None = None     # what the method computes, in a sentence (`attributions.attribute` sets it)

    @property
    def problem(self) -> str | None:
        return map_problem(self.values, self.method)


def map_problem(values: np.ndarray, method: str = "the map") -> str | None:
    """Why a map cannot be shown (NaN, all zero), as a sentence; None when it is fine."""
    if not np.all(np.isfinite(values)):
        return f"{method} contains NaN or infinite values: the model's output is not finite for this image"
    if not np.any(values):
        return (f"{method} is zero everywhere: nothing in this layer speaks for this class here "
                "(try another layer or class)")
    return None


@contextmanager
def explaining(model: nn.Module) -> Iterator[None]:
    """Eval mode, one caller at a time, gradients on.

    Hooks come and go through their handles: captum removes the ones it adds in its own `finally`, and
    this package's removes each of its own (tests check that the shared model then behaves exactly as
    a fresh copy, forward and backward).
    """
    with model_in_use(model), torch.enable_grad():
        yield


def class_to_explain(model: nn.Module, image: ImageLike | ModelImage, target: int | None) -> int:
    """`target` as an int, or the class the model predicts for `image` when it is None."""
    if target is not None:
        return int(target)
    return int(probabilities(model, model_image(image, model).batch())[0].argmax())


def explained_input(model: nn.Module, image: ImageLike | ModelImage, target: int | None
                    ) -> tuple[ModelImage, torch.Tensor, int]:
    """The image as the model takes it, its input tensor on the model's device, and the class to explain."""
    prepared = model_image(image, model)
    return prepared, prepared.tensor(model_device(model)), class_to_explain(model, prepared, target)


def grad_cam(model: nn.Module, image: ImageLike | ModelImage, layer: str | None = None, target: int | None = None
             ) -> Attribution:
    """Grad-CAM (Selvaraju et al. 2017) of `layer` (default: the last conv) for class `target` (default: the
    predicted one): positive evidence only, upsampled bilinearly to the input size."""
    from captum.attr import LayerAttribution, LayerGradCam

    conv = find_layer(model, layer)
    _, x, target = explained_input(model, image, target)
    with explaining(model):
        cam = LayerGradCam(model, activation_module(model, conv))
        attr = cam.attribute(x, target=target, relu_attributions=True)
        attr = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), "bilinear")
    return Attribution("Grad-CAM", conv.title, target, attr[0, 0].detach().float().cpu().numpy())


def guided_grad_cam(model: nn.Module, image: ImageLike | ModelImage, layer: str | None = None,
                    target: int | None = None) -> Attribution:
    """Guided backpropagation times Grad-CAM: the class's evidence at pixel detail; H x W x 3 (signed)."""
    from captum.attr import GuidedGradCam

    conv = find_layer(model, layer)
    _, x, target = explained_input(model, image, target)
    with explaining(model):
        method = GuidedGradCam(model, activation_module(model, conv))
        attr = method.attribute(x, target=target, interpolate_mode="bilinear")
    return Attribution("Guided Grad-CAM", conv.title, target,
                       attr[0].detach().float().cpu().permute(1, 2, 0).numpy())


def integrated_gradients(model: nn.Module, image: ImageLike | ModelImage, target: int | None = None, steps: int = 32,
                         internal_batch_size: int | None = None) -> Attribution:
    """Integrated Gradients (Sundararajan et al. 2017) from a black image, summed over colour channels.

    Signed: positive pixels raise the class score. The attributions add up to `score_gap`
    (the class score's rise from the black image to this one) up to `delta`, the error of the
    integral's `steps`-point approximation. `internal_batch_size` bounds memory: by default all
    steps in one batch at 32x32, 8 at a time at 224 or 227 (the paper variant then peaks under 1 GB of RSS).
    """
    from captum.attr import IntegratedGradients

    if internal_batch_size is None:
        internal_batch_size = steps if model.input_size <= 64 else 8
    prepared, x, target = explained_input(model, image, target)
    black = replace(prepared, pixels=np.zeros_like(prepared.pixels)).tensor(x.device)
    with explaining(model):
        ig = IntegratedGradients(model)
        attr, delta = ig.attribute(x, baselines=black, target=target, n_steps=steps,
                                   internal_batch_size=internal_batch_size, return_convergence_delta=True)
    values = attr[0].detach().float().sum(0).cpu().numpy()
    delta = float(delta.reshape(-1)[0])
    return Attribution("Integrated Gradients", None, target, values, delta, float(values.sum(dtype=np.float64)) - delta)


def upsample(values: np.ndarray, size: int) -> np.ndarray:
    """An H x W map to size x size, bilinear: to lay a map over a larger picture of the same crop."""
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
