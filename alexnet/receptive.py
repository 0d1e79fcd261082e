"""What each conv unit sees and which test images excite each channel most, after Zeiler and Fergus (2013).

`receptive_fields` reads a model's layer list (`model.features`: convolutions and pools change
the geometry; ReLUs and norms act pixel by pixel or across channels and leave it alone) and
gives each conv layer's receptive field in the pixels of the model's input: its side, the
stride between neighbouring units, and where the field of unit (0, 0) starts (negative: in the
zero padding). Works for every variant here and torchvision's ImageNet AlexNet alike.

`top_images` makes one batched pass over a set of images through the conv stack and keeps,
for every channel of every requested layer at once, the `k` images whose largest activation
(after the layer's ReLU) is largest, with where in the map it lies. `crop` cuts the input
pixels under that unit's receptive field, clipped at the image's borders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import analysis
from .data import inference_batch_size, normalization, to_model_input
from .explain import activation_module, conv_layers, find_layer
from .predict import model_device, model_in_use

ProgressHandler = Callable[[int, int], None]   # (images done, images in all)


@dataclass(frozen=True)
class ReceptiveField:
    """A conv layer's receptive field in model-input pixels."""
    size: int       # side of the square field
    stride: int     # input pixels between the fields of neighbouring units
    offset: int     # input row (and column) where the field of unit (0, 0) starts; negative inside the padding

    def window(self, y: int, x: int, side: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of unit (y, x)'s field on a side x side input, clipped to it
        (bottom and right exclusive)."""
        top, left = self.offset + y * self.stride, self.offset + x * self.stride
        return max(top, 0), max(left, 0), min(top + self.size, side), min(left + self.size, side)


def _square(value: int | tuple[int, ...], what: str, module: nn.Module) -> int:
    values = (value,) if isinstance(value, int) else tuple(value)
    if len(set(values)) != 1:
        raise ValueError(f"{type(module).__name__} has a non-square {what} {values}: receptive fields here are square")
    return values[0]


def receptive_fields(model: nn.Module) -> dict[str, ReceptiveField]:
    """Each conv layer's receptive field, by its title (conv1..conv5), from `model.features` in order."""
    titles = {layer.index: layer.title for layer in conv_layers(model)}
    size, stride, offset = 1, 1, 0
    fields = {}
    for index, module in enumerate(model.features):
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            kernel = _square(module.kernel_size, "kernel", module)
            step = _square(module.stride, "stride", module)
            padding = _square(module.padding, "padding", module)
            dilation = _square(getattr(module, "dilation", 1), "dilation", module)
            size += (dilation * (kernel - 1)) * stride
            offset -= padding * stride
            stride *= step
        if index in titles:
            fields[titles[index]] = ReceptiveField(size, stride, offset)
    return fields


@dataclass(frozen=True)
class TopImages:
    """For each channel of one layer, the `k` images that excite it most, strongest first."""
    layer: str                 # conv1..conv5
    field: ReceptiveField
    images: np.ndarray         # channels x k, int64: indices into the images passed
    values: np.ndarray         # channels x k, float32: the channel's largest activation in that image
    positions: np.ndarray      # channels x k x 2, int64: (row, column) of that activation in the channel's map

    @property
    def channels(self) -> int:
        return len(self.images)


def _merge(kept: tuple[torch.Tensor, ...] | None, values: torch.Tensor, images: torch.Tensor,
           positions: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """Per channel (rows), the k largest of what was kept and this batch's values (columns)."""
    if kept is not None:
        values = torch.cat([kept[0], values], dim=1)
        images = torch.cat([kept[1], images], dim=1)
        positions = torch.cat([kept[2], positions], dim=1)
    best, order = values.topk(min(k, values.shape[1]), dim=1)
    return best, images.gather(1, order), positions.gather(1, order.unsqueeze(-1).expand(-1, -1, 2))


def top_images(model: nn.Module, images: torch.Tensor, layers: Sequence[str] | None = None, k: int = 9,
               batch_size: int | None = None, on_progress: ProgressHandler | None = None) -> dict[str, TopImages]:
    """The top-`k` images of every channel of `layers` (default: every conv layer), in one pass over `images`
    (uint8 N x 3 x H x W as `predict.probabilities` takes them). Runs the conv stack only as deep as the deepest
    layer asked for; the model is only read (`model_in_use`: eval mode, one caller at a time)."""
    wanted = {find_layer(model, name) for name in layers} if layers else set(conv_layers(model))
    features = list(model.features)
    ends = {layer.title: features.index(activation_module(model, layer)) + 1   # through the conv's ReLU
            for layer in sorted(wanted, key=lambda layer: layer.index)}
    fields = receptive_fields(model)
    device, (mean, std) = model_device(model), normalization(model)
    batch_size = batch_size or inference_batch_size(device)
    kept: dict[str, tuple[torch.Tensor, ...]] = {}
    with model_in_use(model), torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_model_input(images[start:start + batch_size].to(device), model.input_size, mean, std,
                               channels_last=True)
            index = torch.arange(start, start + len(x), device=device)
            done = 0
            for title, end in ends.items():
                x = model.features[done:end](x)
                done = end
                width = x.shape[-1]
                values, where = x.flatten(2).max(dim=2)                    # batch x channels
                spots = torch.stack([where // width, where % width], dim=-1)       # batch x channels x 2
                kept[title] = _merge(kept.get(title), values.T, index.expand(x.shape[1], -1),
                                     spots.transpose(0, 1), k)
            if on_progress is not None:
                on_progress(min(start + batch_size, len(images)), len(images))
    out = {}
    for title in ends:
        values, indices, positions = (t.cpu().numpy() for t in kept[title])
        out[title] = TopImages(title, fields[title], indices, values, positions)
    return out


def crop(picture: np.ndarray, field: ReceptiveField, y: int, x: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The pixels of `picture` (the model's input, S x S (x 3)) under unit (y, x)'s field, clipped at the borders,
    and the clipped window (top, left, bottom, right)."""
    top, left, bottom, right = field.window(y, x, picture.shape[0])
    return picture[top:bottom, left:right], (top, left, bottom, right)


# ---- kept in the subject's analysis folder (alexnet/analysis.py) ----

TOP_IMAGES = "top-images.safetensors"


def save_top_images(subject: analysis.Subject, tops: dict[str, TopImages]) -> None:
    arrays = {}
    for title, top in tops.items():
        arrays.update({f"{title}.images": top.images, f"{title}.values": top.values.astype(np.float32),
                       f"{title}.positions": top.positions})
    fields = {title: [top.field.size, top.field.stride, top.field.offset] for title, top in tops.items()}
    analysis.save_arrays(subject.path(TOP_IMAGES), arrays, {"fields": fields}, subject)


def load_top_images(subject: analysis.Subject) -> dict[str, TopImages] | None:
    """The cached top images of every conv layer of this subject, or None when missing or stale."""
    found = analysis.load_arrays(subject.path(TOP_IMAGES), subject)
    if found is None:
        return None
    arrays, meta = found
    return {title: TopImages(title, ReceptiveField(*field), arrays[f"{title}.images"], arrays[f"{title}.values"],
                             arrays[f"{title}.positions"]) for title, field in meta["fields"].items()}
