"""Local response normalisation as the 2012 paper writes it, fast on a CPU.

    b_c = a_c / (k + alpha * sum_{c' in window(c)} a_{c'}^2) ** beta

`torch.nn.LocalResponseNorm` divides `alpha` by the window size (the paper's
formula is torch's module with alpha*size) and runs a 3-d average pool that is
slow on CPUs. Here every step is a cheap elementwise pass in the input's own
layout and dtype (under bf16 autocast the layer runs in bf16):

- alpha * a^2 goes into a zero-padded buffer and the window sum is a few
  shifted adds of it (3 for n=5, by doubling); channels-last tensors are
  summed along their contiguous innermost axis, with no copy to NCHW;
- d^-3/4 is rsqrt(d) * sqrt(rsqrt(d)) rather than a slow fractional `pow`;
- the backward pass is written out and reuses the forward pass's d^-beta and
  a d^(-beta-1), so it computes no power at all;
- with no gradient wanted (evaluation, prediction) nothing is kept.

Fresh large tensors are expensive on a CPU (each is new memory to fault in),
so intermediates are overwritten in place once they are no longer needed.
bench/lrn_vs_bn.py measures it against batch norm and torch's module.
"""
from __future__ import annotations

import torch
from torch import nn


def _channel_view(x: torch.Tensor) -> tuple[torch.Tensor, int, bool]:
    """The tensor with its channel axis where it is cheapest to slide along: last for channels-last tensors."""
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    if channels_last:
        return x.permute(0, 2, 3, 1), 3, True
    return x, 1, False


def _back(v: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return v.permute(0, 3, 1, 2) if channels_last else v


def _padded(like: torch.Tensor, dim: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero buffer with size // 2 extra slots at both ends of `dim`, and the view of its centre."""
    half = size // 2
    shape = list(like.shape)
    shape[dim] += 2 * half
    buffer = like.new_zeros(shape)
    return buffer, buffer.narrow(dim, half, like.shape[dim])


def _window_sums(buffer: torch.Tensor, size: int, dim: int, length: int) -> torch.Tensor:
    """out[c] = buffer[c] + ... + buffer[c + size - 1] along `dim`: the centred window sum of the padded values.

    Built by doubling (sums of 2, then 4, ... neighbours) and adding the blocks that the binary digits
    of `size` call for: 3 passes for the paper's 5 instead of 4, and log2(size) + 1 or so in general.
    """
    pieces, start = [], 0
    sums, width = buffer, 1  # sums[i] = buffer[i] + ... + buffer[i + width - 1]
    while True:
        if size & width:
            pieces.append(sums.narrow(dim, start, length))
            start += width
        if 2 * width > size:
            break
        count = sums.shape[dim] - width
        sums = torch.add(sums.narrow(dim, 0, count), sums.narrow(dim, width, count))
        width *= 2
    if len(pieces) == 1:
        return pieces[0].clone()
    out = torch.add(pieces[0], pieces[1])
    for piece in pieces[2:]:
        out.add_(piece)
    return out


def _denominator(xv: torch.Tensor, size: int, alpha: float, k: float, dim: int) -> torch.Tensor:
    """d = k + alpha * (sum of squares over the window), in one new tensor."""
    buffer, centre = _padded(xv, dim, size)
    centre.addcmul_(xv, xv, value=alpha)
    # k is added once at the end: spread over the window as k/size it would round `size` times in bf16.
    return _window_sums(buffer, size, dim, xv.shape[dim]).add_(k)


def _inverse_power(denom: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """d^-beta, and for the paper's beta = 3/4 also r = d^-1/2 written over d (then d^-beta = r * sqrt(r)).

    `pow` with a fractional exponent is the slowest pass of the layer (an exp and a log per value);
    rsqrt, sqrt and a multiply take a third of its time. In float32 the result differs from `pow`
    by a few units in the last place; in bfloat16 its relative error (about 0.3% rms, under 1%)
    is 1.7x pow's, the size of bf16's own rounding step (0.4%).
    """
    if beta == 0.75:
        r = denom.rsqrt_()
        return r.sqrt().mul_(r), r
    return denom.pow(-beta), None


def _forward_only(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    xv, dim, channels_last = _channel_view(x)
    scale, _ = _inverse_power(_denominator(xv, size, alpha, k, dim), beta)
    return _back(scale.mul_(xv), channels_last)


class _LocalResponseNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):  # type: ignore[override]
        xv, dim, channels_last = _channel_view(x)
        denom = _denominator(xv, size, alpha, k, dim)
        scale, r = _inverse_power(denom, beta)     # d^-beta, kept for the backward pass
        yv = xv * scale
        if r is not None:                          # a d^(-beta-1) = y r^2, written over r
            y_over_d = r.mul_(r).mul_(yv)
        else:                                      # ... = y / d, written over d (pow left it intact)
            y_over_d = torch.div(yv, denom, out=denom)
        ctx.save_for_backward(xv, scale, y_over_d)
        ctx.hyper = (size, alpha, beta, dim, channels_last)
        return _back(yv, channels_last)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        xv, scale, y_over_d = ctx.saved_tensors
        size, alpha, beta, dim, channels_last = ctx.hyper
        gv = grad_out.permute(0, 2, 3, 1) if channels_last else grad_out  # whatever layout the gradient has
        # d b_i / d a_j = delta_ij d_i^-beta - 2 alpha beta a_j * a_i d_i^(-beta-1) for every window i containing j;
        # the window is symmetric (odd size), so that sum over i is the same centred window sum.
        buffer, centre = _padded(xv, dim, size)
        torch.mul(gv, y_over_d, out=centre)
        spread = _window_sums(buffer, size, dim, xv.shape[dim])
        del buffer, centre
        grad_in = (gv * scale).addcmul_(xv, spread, value=-2.0 * alpha * beta)
        return _back(grad_in, channels_last), None, None, None, None


def local_response_norm(x: torch.Tensor, size: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75, k: float = 2.0) -> torch.Tensor:
    """Paper-formula LRN across the channels of an N x C x H x W tensor (alpha is not divided by size)."""
    if size % 2 != 1:
        raise ValueError(f"LRN window size must be odd, got {size}")
    if torch.is_grad_enabled() and x.requires_grad:
        return _LocalResponseNormFn.apply(x, size, alpha, beta, k)
    return _forward_only(x, size, alpha, beta, k)


class LocalResponseNorm(nn.Module):
    """The paper's LRN (n=5, alpha=1e-4, beta=0.75, k=2 by default); equals torch's with alpha*size."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
