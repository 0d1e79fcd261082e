"""Does `torch.compile` train and evaluate a variant as eager mode does, under the training loop's conditions?

The loop compiles the model once and then asks the compiler for a new trace whenever its conditions
change: the second training step (dynamo traces again what it could not keep), evaluation under
`torch.no_grad()` in eval mode at another batch size, training at yet another batch size (a trace with
a symbolic batch size). A layer can compile in one forward and backward pass and still fail at one of
those (the LRN did, under torch 2.11), so this runs the whole sequence on one model, the compiled and
the eager forward at the same weights, and measures how far apart they are at each stage.

bench/compile_check.py prints it as a table for any torch and device; tests/test_lrn_compile.py asserts it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import normalization, to_model_input
from .train import autocast, train_step


@dataclass(frozen=True)
class Stage:
    name: str                 # what the loop does at this point
    batch: int                # images in the batch
    training: bool            # a training step (SGD, backward) or an evaluation (no_grad, eval mode)


def loop_stages(batch: int) -> tuple[Stage, ...]:
    """The order in which the loop meets new conditions, at batch sizes that all differ where they should."""
    return (Stage("train", batch, True),
            Stage("train again", batch, True),
            Stage("evaluate (no_grad, eval mode)", batch + max(batch // 2, 1), False),
            Stage("train (new batch size)", max(batch // 2, 1), True))


@dataclass(frozen=True)
class StageResult:
    stage: Stage
    logits: float             # max |compiled - eager| of the logits
    logits_scale: float       # max |eager| of the logits, to read the difference against
    gradients: float | None   # the largest ||compiled - eager|| / ||eager|| over the parameters' gradients


# How far compiled may be from eager, relative to eager's values: a few rounding steps of the autocast dtype
# (bf16 keeps 8 bits, fp16 11) where the compiler fuses what eager rounds separately; float32 sums in another order.
TOLERANCE = {torch.bfloat16: 4 * 2 ** -8, torch.float16: 4 * 2 ** -11, torch.float32: 1e-4}


def agrees(result: StageResult, dtype: torch.dtype) -> bool:
    """The compiled logits and gradients are within TOLERANCE[dtype] of eager mode's."""
    tolerance = TOLERANCE[dtype]
    return (result.logits <= tolerance * max(result.logits_scale, 1.0)
            and (result.gradients is None or result.gradients <= tolerance))


def _differences(compiled: list[torch.Tensor], eager: list[torch.Tensor]) -> float:
    return max(((c.float() - e.float()).norm() / e.float().norm().clamp_min(1e-12)).item()
               for c, e in zip(compiled, eager))


def _eager_gradients(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, device: torch.device,
                     dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and parameter gradients of the loss, computed as train_step computes them, without a step."""
    model.zero_grad(set_to_none=True)
    with autocast(device, dtype):
        logits = model(inputs)
        loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters()]


def _run_stage(stage: Stage, model: nn.Module, compiled: Callable, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, inputs: torch.Tensor, labels: torch.Tensor,
               device: torch.device, dtype: torch.dtype) -> StageResult:
    if stage.training:
        eager, eager_grads = _eager_gradients(model, inputs, labels, device, dtype)
        _, logits = train_step(compiled, optimizer, scaler, inputs, labels, device, dtype)  # the loop's own step
        gradients = _differences([p.grad for p in model.parameters()], eager_grads)
    else:
        model.eval()
        try:
            with torch.no_grad(), autocast(device, dtype):
                eager, logits = model(inputs), compiled(inputs)
        finally:
            model.train()
        gradients = None
    return StageResult(stage, (logits.float() - eager.float()).abs().max().item(),
                       eager.float().abs().max().item(), gradients)


def check_compiled(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                   dtype: torch.dtype, batch: int, backend: str = "inductor",
                   on_stage: Callable[[StageResult], None] | None = None) -> list[StageResult]:
    """Run `loop_stages(batch)` on `model` compiled with `torch.compile(model, backend=backend)`, as the loop
    compiles it, beside `model` itself; exceptions from the compiler propagate. The model is trained (SGD).

    `model` gives logits for inputs of `model.input_size`, channels-last as the loop's default; it should
    have no dropout, so that both forwards see the same network (`build(variant, norm, dropout=0.0)`).
    `images` (uint8 N x 3 x 32 x 32, enough for every stage) and `labels` are real data.
    """
    model = model.to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    compiled = torch.compile(model, backend=backend)
    results, start = [], 0
    for stage in loop_stages(batch):
        x = to_model_input(images[start:start + stage.batch].to(device), model.input_size, *normalization(model))
        y = labels[start:start + stage.batch].to(device)
        start += stage.batch
        result = _run_stage(stage, model, compiled, optimizer, scaler,
                            x.contiguous(memory_format=torch.channels_last), y, device, dtype)
        results.append(result)
        if on_stage:
            on_stage(result)
    return results
