"""How a fresh network's weights are drawn, so that every build starts at chance and learns from its first step.

A classifier of 10 classes should start at a loss near ln 10 = 2.30 (no class favoured) and with
activations of one scale whatever the norm, so that a comparison of norms measures the norms.
Kaiming's formula keeps the second moment of a conv + ReLU stack constant, but it does not know
what else this network does in training mode: overlapping max-pools and dropout raise the second
moment (dropout doubles it), BN resets it to 1 after the ReLU, LRN divides it by about 2.8. Measured
on 64 real test images before any step, the last layer saw inputs of second moment 20 (paper
variant, BN) against 1.5 (LRN), and the loss started at 4.36 (BN), 3.56 (no norm), 2.49 (LRN). SGD's
step on a layer's output grows with the squared size of the layer's input, so at one learning rate
the wide BN build took steps about 13 times larger than the LRN build and died in its first steps
(loss flat at ln 10), and an LRN-versus-BN experiment measured that, not the norms.

So the "lsuv" scheme (the default) draws He-normal weights, then rescales each layer in forward
order so that its output has unit second moment in training mode (dropout and BN as in training)
on a fixed batch of noise images: layer-sequential unit-variance init (Mishkin and Matas, "All you
need is a good init", ICLR 2016), done on noise, so it depends on the architecture alone, never on a
dataset, and draws nothing from the caller's random stream. Every scheme but "torch" starts the
last layer at zero, as torchvision's VisionTransformer does its head: every logit is 0, the loss is
exactly ln(classes), and the first step trains the last layer only.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["INITS", "init_weights", "calibrate"]

# lsuv: He-normal, calibrated to unit second moments; kaiming: He-normal as drawn; paper: N(0, 0.01) with
# biases 1 in conv2/4/5 and fc6/fc7 (the 2012 paper's); torch: PyTorch's layer defaults, untouched.
INITS = ("lsuv", "kaiming", "paper", "torch")
CALIBRATION_IMAGES = 8   # noise images in the calibration batch (8 at 227x227 keeps it under a second on a CPU)
CALIBRATION_SEED = 0


def _weighted_layers(model: nn.Module) -> tuple[list[nn.Conv2d], list[nn.Linear]]:
    return ([m for m in model.modules() if isinstance(m, nn.Conv2d)],
            [m for m in model.modules() if isinstance(m, nn.Linear)])


def init_weights(model: nn.Module, scheme: str = "lsuv") -> None:
    """Draw the weights of a freshly built model in place (see the module docstring for the schemes)."""
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}: choose {', '.join(INITS)}")
    if scheme == "torch":
        return
    convs, linears = _weighted_layers(model)
    if scheme in ("lsuv", "kaiming"):
        for m in convs + linears:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    else:  # the 2012 paper's
        for m in convs + linears:
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        for m in (convs[1], convs[3], convs[4], linears[0], linears[1]):
            nn.init.ones_(m.bias)
    if scheme == "lsuv":
        calibrate(model, convs + linears[:-1])
    nn.init.zeros_(linears[-1].weight)
    nn.init.zeros_(linears[-1].bias)


@torch.no_grad()
def calibrate(model: nn.Module, layers: list[nn.Module], images: int = CALIBRATION_IMAGES) -> None:
    """Scale each layer's weight, in forward order, so that its output's second moment is 1 in training mode.

    One forward pass on a batch of noise: as each layer runs, a hook divides its weight by the root of its
    output's second moment and hands the layers after it the output divided the same way, which is exactly
    the output of the rescaled layer, as a layer without bias is linear in its weight. So every layer is
    measured on what the layers before it give once they are calibrated, at the cost of one pass (a pass per
    layer made the paper variant's build 2 s on a CPU). BN's running statistics are put back afterwards, and
    the caller's random state is left as it was.
    """
    if any(getattr(layer, "bias", None) is not None and layer.bias.any() for layer in layers):
        raise ValueError("calibrate rescales layers without bias: zero the biases first")
    side = getattr(model, "input_size", 224)
    device = next(model.parameters()).device
    noise = torch.randn(images, 3, side, side, generator=torch.Generator().manual_seed(CALIBRATION_SEED)).to(device)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()
    handles = [layer.register_forward_hook(_rescale_to_unit_moment) for layer in layers]
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(CALIBRATION_SEED)  # the dropout masks of the calibration pass, whatever the caller's
            model(noise)
    finally:
        for handle in handles:
            handle.remove()
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
        model.train(was_training)


def _rescale_to_unit_moment(layer: nn.Module, _inputs: tuple, out: torch.Tensor) -> torch.Tensor:
    moment = out.float().pow(2).mean()
    if not (torch.isfinite(moment) and moment > 0):
        return out
    layer.weight.div_(moment.sqrt())
    return out / moment.sqrt().to(out.dtype)
