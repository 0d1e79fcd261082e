"""Checks that a shared model was left as it was, through public behaviour only."""
from __future__ import annotations

import torch
from torch import nn


def assert_behaves_like(model: nn.Module, reference: nn.Module, side: int) -> None:
    """`model` gives the same outputs and the same input gradients as `reference` (a fresh copy of the same
    weights), in eval mode: no hook left behind changes what it computes forward or backward (captum's guided
    backpropagation, say, rewrites ReLU gradients through hooks). Parameters' .grad are left untouched."""
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    seen = []
    for m in (model, reference):
        was_training = m.training
        m.eval()
        try:
            xi = x.clone().requires_grad_()
            out = m(xi)
            weights = torch.arange(1, out.shape[1] + 1, dtype=out.dtype)  # every class's score counts
            (grad,) = torch.autograd.grad((out * weights).sum(), xi)
        finally:
            m.train(was_training)
        seen.append((out.detach(), grad))
    (out, grad), (ref_out, ref_grad) = seen
    assert torch.equal(out, ref_out), "the model's outputs differ from a fresh copy's"
    assert torch.allclose(grad, ref_grad, rtol=1e-5, atol=1e-7), "its input gradients differ from a fresh copy's"
