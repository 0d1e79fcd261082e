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

    One forward pass per layer on the same noise with the same dropout masks: a layer's output is linear
    in its weight (biases are zero here), so one rescale makes it exactly 1 for this batch. BN's running
    statistics are put back afterwards, and the caller's random state is left as it was.
    """
    side = getattr(model, "input_size", 224)
    device = next(model.parameters()).device
    noise = torch.randn(images, 3, side, side, generator=torch.Generator().manual_seed(CALIBRATION_SEED)).to(device)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()
    seen: dict[str, torch.Tensor] = {}
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for layer in layers:
                handle = layer.register_forward_hook(lambda _m, _i, out: seen.__setitem__("out", out))
                try:
                    torch.manual_seed(CALIBRATION_SEED)  # the same dropout masks for every pass
                    model(noise)
                finally:
                    handle.remove()
                moment = seen["out"].float().pow(2).mean()
                if torch.isfinite(moment) and moment > 0:
                    layer.weight.div_(moment.sqrt())
    finally:
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
        model.train(was_training)
