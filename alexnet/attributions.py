"""Attribution maps behind one entry point, `attribute`: each method a single H x W map at the model's input size.

Beside `explain.py`'s Grad-CAM and Integrated Gradients: Grad-CAM++, Layer-CAM, Score-CAM and Eigen-CAM at any
conv layer (conv1's 32x32 maps are not conv5's 7x7 blur), occlusion and SmoothGrad. The same rules as
`explain.py`: the shared model is used inside `explain.explaining` (eval mode, one caller, no hook left behind)
and only the input or one layer's activations get gradients, so no parameter's `.grad` is touched.

Why the CAM family is written out here and not taken from the grad-cam package (`pytorch_grad_cam` 1.5.7,
checked on this machine): it imports without a display (it needs opencv-python-headless, not libGL), removes
its hooks, and its Grad-CAM++ and Layer-CAM weights are the papers'. But
- its gradient methods call `loss.backward()`: every parameter of a shared, cached model is left holding a
  `.grad` (all 20 of the demo model's; 233 MB on the ImageNet model), computed for nothing on every map;
- its constructor switches the caller's model to eval mode;
- its Eigen-CAM centres the activations before the SVD and then keeps the positive side of a component whose
  sign the SVD leaves arbitrary: on 4 of the first 40 CIFAR-10 test images its conv5 map is the opposite of the
  paper's (rank correlation -0.91 on test image #4);
- its Score-CAM weighs channels by a softmax over channels of the class logit, where the authors' released code
  weighs them by the class's softmax probability and skips constant channels; it prints a progress bar per call;
- it brings OpenCV, scikit-learn, matplotlib and ttach for formulas of a few lines each.
So each CAM below is its paper's formula on the activations and gradients that one forward hook and one
`torch.autograd.grad` give. captum gives occlusion (`Occlusion`) and SmoothGrad (`NoiseTunnel` over `Saliency`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import explain
from .explain import Attribution, ConvLayer, activation_module, explained_input, explaining, find_layer
from .inputs import ImageLike, ModelImage

__all__ = ["Method", "METHODS", "attribute", "grad_cam_plus_plus", "layer_cam", "score_cam", "eigen_cam",
           "occlusion", "smooth_grad"]

SCORE_CAM_BATCH = 64         # masked images per forward pass (64 x 3 x 227 x 227 floats: 40 MB)
SMOOTHGRAD_SAMPLES = 16      # noisy copies averaged
SMOOTHGRAD_NOISE = 0.15      # noise std as a share of the input's range (Smilkov et al. found 10-20% best)
SMOOTHGRAD_SEED = 0          # the same noise every call: a map can be cached and reproduced


def _activations(model: nn.Module, x: torch.Tensor, conv: ConvLayer, target: int | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A conv layer's rectified activations A (1 x K x h x w) and, for a target class, d score / d A.

    One forward hook keeps A; `torch.autograd.grad` differentiates the class score with respect to A
    only. The input asks for gradients so that A does too when the model's weights are frozen.
    """
    kept: list[torch.Tensor] = []
    handle = activation_module(model, conv).register_forward_hook(lambda module, args, out: kept.append(out))
    try:
        with torch.set_grad_enabled(target is not None):
            scores = model(x.detach().requires_grad_(target is not None))
    finally:
        handle.remove()
    if len(kept) != 1:
        raise RuntimeError(f"{conv.title}'s activation ran {len(kept)} times in one forward pass, not once")
    if target is None:
        return kept[0].detach(), None
    (grads,) = torch.autograd.grad(scores[0, target], kept[0])
    return kept[0].detach(), grads


def _to_input_size(cam: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """An h x w map to the input's size, bilinear (as Grad-CAM's), as float32 numpy."""
    up = F.interpolate(cam[None, None].float(), size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return up[0, 0].cpu().numpy()


def _cam(name: str, formula: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], needs_grads: bool):
    """A CAM method from its formula: (A, dS/dA) of one image (K x h x w each) -> the h x w map."""
    def method(model: nn.Module, image: ImageLike | ModelImage, layer: str | None = None, target: int | None = None
               ) -> Attribution:
        conv = find_layer(model, layer)
        _, x, target = explained_input(model, image, target)
        with explaining(model):
            acts, grads = _activations(model, x, conv, target if needs_grads else None)
            cam = formula(acts[0].float(), None if grads is None else grads[0].float())
        return Attribution(name, conv.title, target, _to_input_size(cam, x))
    method.__name__ = method.__qualname__ = formula.__name__.lstrip("_")
    method.__doc__ = f"{name} of conv `layer` (default: the last) for class `target` (default: the predicted one), " \
                     f"upsampled bilinearly to the input size.\n\n{formula.__doc__}"
    return method


def _grad_cam_plus_plus(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Chattopadhay et al. 2018, eq. 19 with Y = exp(S): alpha = g^2 / (2 g^2 + sum_ab A_ab g^3) at each
    position, w_k = sum_ij alpha_ij relu(g_ij); the factor exp(S) that every w_k shares is left out (it
    only scales the map, and overflows for large scores). alpha is 0 where its denominator is."""
    g2, g3 = g ** 2, g ** 3
    denominator = 2 * g2 + a.sum(dim=(1, 2), keepdim=True) * g3
    alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1), 0)
    weights = (alpha * g.clamp(min=0)).sum(dim=(1, 2), keepdim=True)
    return torch.relu((weights * a).sum(0))


def _layer_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Jiang et al. 2021, eq. 4-5: each position's activation weighed by its own positive gradient."""
    return torch.relu((g.clamp(min=0) * a).sum(0))


def _eigen_cam(a: torch.Tensor, g: None) -> torch.Tensor:
    """Muhammad & Yeasin 2020: the activations (h*w x K) projected on their first right singular vector.

    Not centred, as in the paper: rectified activations are non-negative, so that vector can be taken
    with non-negative entries (its sign is the SVD's choice; it is turned so its entries sum >= 0).
    """
    k, h, w = a.shape
    flat = a.reshape(k, h * w).T
    v = torch.linalg.svd(flat, full_matrices=False).Vh[0]
    v = -v if v.sum() < 0 else v
    return torch.relu(flat @ v).reshape(h, w)


grad_cam_plus_plus = _cam("Grad-CAM++", _grad_cam_plus_plus, needs_grads=True)
layer_cam = _cam("Layer-CAM", _layer_cam, needs_grads=True)
eigen_cam = _cam("Eigen-CAM", _eigen_cam, needs_grads=False)


def score_cam(model: nn.Module, image: ImageLike | ModelImage, layer: str | None = None, target: int | None = None
              ) -> Attribution:
    """Score-CAM (Wang et al. 2020) as the authors' released code computes it: each channel's map, upsampled
    and scaled to [0, 1], masks the input; the class's softmax probability on that masked input weighs the
    upsampled map; ReLU of the sum. A constant channel masks nothing in particular and gets weight 0.
    One forward pass per varying channel (256 at conv5), batched."""
    conv = find_layer(model, layer)
    _, x, target = explained_input(model, image, target)
    with explaining(model), torch.no_grad():
        acts, _ = _activations(model, x, conv, None)
        up = F.interpolate(acts, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0]
        low, high = up.amin(dim=(1, 2)), up.amax(dim=(1, 2))
        varying = torch.nonzero(high > low).flatten()
        weights = torch.zeros(len(up), device=up.device)
        for batch in varying.split(SCORE_CAM_BATCH):
            masks = (up[batch] - low[batch, None, None]) / (high - low)[batch, None, None]
            weights[batch] = torch.softmax(model(x * masks[:, None]).float(), dim=1)[:, target]
        cam = torch.relu((weights[:, None, None] * up.float()).sum(0))
    return Attribution("Score-CAM", conv.title, target, cam.cpu().numpy())


def occlusion_window(side: int) -> tuple[int, int]:
    """(window, stride) of the occluding square: 7 x 7 positions that cover the whole input exactly
    (8 and 4 at 32x32, 56 and 28 at 224, 59 and 28 at 227)."""
    stride = max(side // 8, 1)
    return side - 6 * stride, stride


def occlusion(model: nn.Module, image: ImageLike | ModelImage, layer: str | None = None, target: int | None = None
              ) -> Attribution:
    """Occlusion (Zeiler & Fergus 2014) with captum: the class score's drop when a square of the input is
    replaced by the dataset's mean colour (0 after normalisation), averaged over the squares that cover
    each pixel. Signed: negative where hiding the region raises the score. `layer` is not used."""
    from captum.attr import Occlusion  # where used, as in explain.py

    _, x, target = explained_input(model, image, target)
    window, stride = occlusion_window(x.shape[-1])
    with explaining(model), torch.no_grad():
        attr = Occlusion(model).attribute(x, target=target, sliding_window_shapes=(3, window, window),
                                          strides=(3, stride, stride), baselines=0.0, perturbations_per_eval=49)
    return Attribution("Occlusion", None, target, attr[0].mean(0).float().cpu().numpy())


def smooth_grad(model: nn.Module, image: ImageLike | ModelImage, layer: str | None = None, target: int | None = None,
                samples: int = SMOOTHGRAD_SAMPLES, noise: float = SMOOTHGRAD_NOISE, seed: int = SMOOTHGRAD_SEED
                ) -> Attribution:
    """SmoothGrad (Smilkov et al. 2017) with captum's NoiseTunnel over Saliency: the mean of |d score / d input|
    over `samples` copies of the input with Gaussian noise (std `noise` times the input's range), the
    largest over colour channels at each pixel (Simonyan et al.'s reduction). The noise comes from torch's
    generator seeded with `seed` inside `fork_rng`, so the caller's random state is left as it was."""
    from captum.attr import NoiseTunnel, Saliency

    _, x, target = explained_input(model, image, target)
    std = noise * float(x.max() - x.min())
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with explaining(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        attr = NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=samples, stdevs=std,
                                                      target=target)
    return Attribution("SmoothGrad", None, target, attr[0].amax(0).detach().float().cpu().numpy())


def _integrated_gradients(model: nn.Module, image: ImageLike | ModelImage, layer: str | None = None,
                          target: int | None = None) -> Attribution:
    return explain.integrated_gradients(model, image, target)


@dataclass(frozen=True)
class Method:
    """An attribution method: its name, what it computes (one sentence) and the function that computes it."""
    name: str
    computes: str
    uses_layer: bool         # explains one conv layer's activations
    class_specific: bool     # the map changes with the class explained
    signed: bool             # negative values mean something (else the map is >= 0)
    compute: Callable[[nn.Module, ImageLike | ModelImage, str | None, int | None], Attribution]


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("Grad-CAM", "the layer's rectified maps weighed by the class score's mean gradient over each map "
           "(Selvaraju et al. 2017)", True, True, False, explain.grad_cam),
    Method("Grad-CAM++", "the layer's maps weighed by a weighted mean of the positive gradients, which gives "
           "weight to every instance of the class, not only the largest (Chattopadhay et al. 2018)",
           True, True, False, grad_cam_plus_plus),
    Method("Layer-CAM", "each position of the layer's maps weighed by its own positive gradient, so shallow layers "
           "give fine-grained maps (Jiang et al. 2021)", True, True, False, layer_cam),
    Method("Score-CAM", "the layer's maps weighed by the class probability when the image is masked by each map; "
           "no gradients (Wang et al. 2020)", True, True, False, score_cam),
    Method("Eigen-CAM", "the first principal component of the layer's maps: where the layer responds most, "
           "whatever the class (Muhammad & Yeasin 2020)", True, False, False, eigen_cam),
    Method("Occlusion", "how much the class score drops when a square of the image is hidden behind the mean "
           "colour (Zeiler & Fergus 2014)", False, True, True, occlusion),
    Method("SmoothGrad", "the size of the class score's gradient with respect to each pixel, averaged over "
           f"{SMOOTHGRAD_SAMPLES} noisy copies of the image (Smilkov et al. 2017)", False, True, False, smooth_grad),
    Method("Integrated Gradients", "each pixel's share of the class score's rise from a black image "
           "(Sundararajan et al. 2017)", False, True, True, _integrated_gradients),
)}


def method_named(method: str | Method) -> Method:
    """A Method, or the one registered under that name, or a clear error naming the choices."""
    if isinstance(method, Method):
        return method
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}: choose one of {', '.join(METHODS)}")
    return METHODS[method]


def attribute(model: nn.Module, image: ImageLike | ModelImage, target: int | None = None, layer: str | None = None, *,
              method: str | Method) -> Attribution:
    """`method`'s map of `image` for class `target` (default: the predicted one) at conv `layer` (default: the
    last; ignored by methods that do not use a layer): an H x W map at the model's input size, with the
    method's name, what it computes and the layer it explains."""
    chosen = method_named(method)
    result = chosen.compute(model, image, layer if chosen.uses_layer else None, target)
    return replace(result, method=chosen.name, computes=chosen.computes)
