"""Local response normalisation as the 2012 paper writes it, fast on a CPU.

    b_c = a_c / (k + alpha * sum_{c' in window(c)} a_{c'}^2) ** beta

`torch.nn.LocalResponseNorm` divides `alpha` by the window size (the paper's
formula is torch's module with alpha*size) and runs a 3-d average pool that is
slow on CPUs and has no bfloat16 kernel. Here the window sum is a few shifted
in-place adds, and the backward pass is written out, so autograd keeps three
tensors instead of a chain of intermediates.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _window_sum(v: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Sum over a centred window of `size` along `dim` (zero padded), like the paper's sum over n channels."""
    before, after = size // 2, (size - 1) // 2
    length = v.shape[dim]
    pad = [0, 0] * (v.dim() - 1 - dim) + [before, after]
    padded = F.pad(v, pad)
    out = padded.narrow(dim, 0, length).clone()
    for offset in range(1, size):
        out.add_(padded.narrow(dim, offset, length))
    return out


class _LocalResponseNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):  # type: ignore[override]
        # Channels-last tensors are summed along their innermost (contiguous) axis.
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        xv = x.permute(0, 2, 3, 1) if channels_last else x
        dim = 3 if channels_last else 1
        denom = _window_sum(xv * xv, size, dim).mul_(alpha).add_(k)
        yv = xv * denom.pow(-beta)
        ctx.save_for_backward(xv, yv, denom)
        ctx.hyper = (size, alpha, beta, dim, channels_last)
        return yv.permute(0, 3, 1, 2) if channels_last else yv

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        xv, yv, denom = ctx.saved_tensors
        size, alpha, beta, dim, channels_last = ctx.hyper
        gv = grad_out.permute(0, 2, 3, 1) if channels_last else grad_out
        # d b_i / d a_j = delta_ij * d_i^-beta - 2 alpha beta a_i a_j d_j^(-beta-1) summed over windows containing i
        spread = _window_sum(gv * yv / denom, size, dim)  # the window is symmetric for odd sizes
        grad_in = gv * denom.pow(-beta) - (2.0 * alpha * beta) * xv * spread
        grad_in = grad_in.permute(0, 3, 1, 2) if channels_last else grad_in
        return grad_in, None, None, None, None


def local_response_norm(x: torch.Tensor, size: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75, k: float = 2.0) -> torch.Tensor:
    """Paper-formula LRN across the channels of an N x C x H x W tensor (alpha is not divided by size)."""
    if size % 2 != 1:
        raise ValueError(f"LRN window size must be odd, got {size}")
    return _LocalResponseNormFn.apply(x, size, alpha, beta, k)


class LocalResponseNorm(nn.Module):
    """The paper's LRN (n=5, alpha=1e-4, beta=0.75, k=2 by default); equals torch's with alpha*size."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
