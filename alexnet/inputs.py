"""An image as each model takes it and as people are shown it: the one place that decides an image's pixels.

`ImageForms.of(image)` makes the pictures once, from a photo or an array: the 32x32 centre crop a
model trained on CIFAR-10 is given (`images.to_cifar_array`, as CIFAR-10's photos were made),
torchvision's resize to 256 and 224x224 centre crop the ImageNet model is given
(`imagenet.photo_pixels`), and a 224-pixel picture of the square crop for people.
`for_model(model)` answers for one model (`ModelImage`): the pixels it is given, the picture of
that region for people (maps are laid over it), its normalisation, and the tensor it computes
on. The Predict and Explain pages, `predict`, `explain` and the command line all go through it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from .data import Stats, normalization, to_model_input
from .images import to_cifar_array, to_tensor

ImageLike = Image.Image | np.ndarray
CIFAR_SIZE = 32     # the side of CIFAR-10's images: what a model trained on them is given of any image
SHOWN_SIZE = 224    # the side of the picture shown to people of the region a CIFAR-10 model sees


def image_size(model: nn.Module) -> int:
    """The side of the uint8 picture the model is given before any upsampling: 32 for a model trained on
    CIFAR-10 (whatever its input size), 224 for the ImageNet model (`imagenet.build_model`)."""
    return getattr(model, "image_size", CIFAR_SIZE)


@dataclass(frozen=True)
class ModelImage:
    """One image as one model takes it."""
    pixels: np.ndarray      # S x S x 3 uint8 the model is given, S = image_size(model): 32, or 224 for ImageNet
    shown: np.ndarray       # the same region for people, SHOWN_SIZE or 224 square; maps are laid over it
    input_size: int         # the side the model computes at (the pixels are upsampled on the device): 32, 227, 224
    mean: Stats             # the normalisation of the model's inputs (`data.normalization`)
    std: Stats

    def batch(self) -> torch.Tensor:
        """1 x 3 x S x S uint8, as `predict.probabilities` takes a batch."""
        return to_tensor(self.pixels)

    def tensor(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """1 x 3 x I x I float on `device`, I the input size: upsampled and normalised, what the model computes on."""
        return to_model_input(self.batch().to(device), self.input_size, self.mean, self.std)

    def seen(self) -> np.ndarray:
        """The model's input as a picture: `tensor()` with only the normalisation undone (I x I x 3 uint8)."""
        x = self.tensor()[0]
        rgb = x * torch.tensor(self.std).view(3, 1, 1) + torch.tensor(self.mean).view(3, 1, 1)
        return rgb.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@dataclass(frozen=True)
class ImageForms:
    """An image made once into the pictures the lab's models take and people see."""
    small: np.ndarray       # 32 x 32 x 3 uint8: the centre crop, shrunk as CIFAR-10's photos were
    picture: np.ndarray     # SHOWN_SIZE square of the same crop for people (square pixels where the image is smaller)
    photo: np.ndarray       # 224 x 224 x 3 uint8: torchvision's resize to 256 and centre crop, for the ImageNet model
    width: int              # the image's own size
    height: int

    @classmethod
    def of(cls, image: ImageLike) -> "ImageForms":
        """From an RGB image (`images.load_image`) or an H x W x 3 uint8 array. An array that is already a model's
        pixels stays as it is: a 32x32 one is its own small form, a 224x224 one its own photo form."""
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected an H x W x 3 uint8 array, got {image.shape} {image.dtype}")
            picture = Image.fromarray(image)
        else:
            picture = image
        from . import imagenet  # here, not at the top: see imagenet.py's note on torchvision

        return cls(to_cifar_array(picture, CIFAR_SIZE), to_cifar_array(picture, SHOWN_SIZE, sharp_enlargement=True),
                   imagenet.photo_pixels(image), *picture.size)

    def for_model(self, model: nn.Module) -> ModelImage:
        """What `model` is given of the image, and what people are shown of that region."""
        if image_size(model) == CIFAR_SIZE:
            pixels, shown = self.small, self.picture
        else:  # the ImageNet model: the region it sees is its own crop
            pixels = shown = self.photo
        return ModelImage(pixels, shown, model.input_size, *normalization(model))


def model_image(image: ImageLike | ModelImage, model: nn.Module) -> ModelImage:
    """`image` as `model` takes it (a `ModelImage` is taken as it is: the caller prepared it for this model)."""
    if isinstance(image, ModelImage):
        return image
    return ImageForms.of(image).for_model(model)
