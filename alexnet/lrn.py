"""Local response normalisation as the 2012 paper writes it, fast on a CPU.

    b_c = a_c / (k + alpha * sum_{c' in window(c)} a_{c'}^2) ** beta

`torch.nn.LocalResponseNorm` divides `alpha` by the window size (the paper's
formula is torch's module with alpha*size) and runs a 3-d average pool that is
slow on CPUs. Here the layer is a dozen cheap elementwise passes, arranged so
that they cost little:

- the tensor is processed a few images at a time, so every intermediate fits
  in the CPU's cache and is reused from one slice to the next; only the
  outputs are allocated at full size (fresh large tensors are slow on a CPU:
  each is new memory for the kernel to fault in);
- the window sum is shifted adds of a zero-padded slice; channels-last tensors
  are summed along their contiguous innermost axis, with no copy to NCHW;
- d^-3/4 is rsqrt(d) * sqrt(rsqrt(d)), not a slow fractional `pow`;
- bf16 and fp16 inputs are computed in float32 and rounded once on output;
- the backward pass is written out and reuses the forward pass's d^-beta and
  a d^(-beta-1), so it computes no power at all; with no gradient wanted
  (evaluation, prediction) neither is kept.

bench/lrn_vs_bn.py measures it against batch norm and torch's module.
"""
from __future__ import annotations

import torch
from torch import nn

CHUNK_ELEMENTS = {"cpu": 1 << 18}  # values per slice: about a CPU's L2 cache in float32; one slice elsewhere
OTHER_DEVICES_CHUNK = 1 << 24      # GPUs: a bound on the scratch memory, not a cache size


def _channel_view(x: torch.Tensor) -> tuple[torch.Tensor, int, bool]:
    """The tensor with its channel axis where it is cheapest to slide along: last for channels-last tensors."""
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    if channels_last:
        return x.permute(0, 2, 3, 1), 3, True
    return x, 1, False


def _back(v: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return v.permute(0, 3, 1, 2) if channels_last else v


def _slices(xv: torch.Tensor) -> range:
    """Start of each slice of whole images along the batch axis; its length is `_slices(xv).step`."""
    per_image = max(xv[0].numel(), 1) if len(xv) else 1
    budget = CHUNK_ELEMENTS.get(xv.device.type, OTHER_DEVICES_CHUNK)
    return range(0, len(xv), max(1, budget // per_image))


class _Scratch:
    """Working memory for one slice, reused by every slice: a zero-padded window buffer and two temporaries.

    Low-precision inputs are worked on in float32: the window sum and d^-beta lose nothing to
    bf16 rounding, and the values are rounded once, when written to the outputs.
    """

    def __init__(self, like: torch.Tensor, dim: int, size: int, images: int) -> None:
        dtype = torch.float32 if like.dtype in (torch.bfloat16, torch.float16) else like.dtype
        self.convert = dtype != like.dtype
        self.dim, self.size, self.half, self.length = dim, size, size // 2, like.shape[dim]
        shape = [images, *like.shape[1:]]
        self.a, self.b, self.sums = (like.new_empty(shape, dtype=dtype) for _ in range(3))
        shape[dim] += 2 * self.half
        self.padded = like.new_zeros(shape, dtype=dtype)  # only its centre is ever written: the pads stay zero

    def centre(self, n: int) -> torch.Tensor:
        return self.padded[:n].narrow(self.dim, self.half, self.length)

    def window_sums(self, n: int) -> torch.Tensor:
        """sums[c] = centre[c - size//2] + ... + centre[c + size//2], zeros beyond the edges."""
        padded, out, dim, length = self.padded[:n], self.sums[:n], self.dim, self.length
        if self.size == 1:
            return out.copy_(padded)
        torch.add(padded.narrow(dim, 0, length), padded.narrow(dim, 1, length), out=out)
        for offset in range(2, self.size):
            out.add_(padded.narrow(dim, offset, length))
        return out


def _normalise(xv: torch.Tensor, dim: int, size: int, alpha: float, beta: float, k: float, for_backward: bool
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """y = a d^-beta; with `for_backward` also d^-beta and -2 alpha beta a d^(-beta-1), all in xv's dtype."""
    starts = _slices(xv)
    scratch = _Scratch(xv, dim, size, min(starts.step, len(xv)))
    y = torch.empty_like(xv)
    scale = torch.empty_like(xv) if for_backward else None
    spread_factor = torch.empty_like(xv) if for_backward else None
    for start in starts:
        part = slice(start, start + starts.step)
        n = len(xv[part])
        a = scratch.a[:n].copy_(xv[part]) if scratch.convert else xv[part]
        torch.mul(a, a, out=scratch.centre(n))
        d = scratch.window_sums(n).mul_(alpha).add_(k)
        s = scratch.b[:n]
        if beta == 0.75:
            r = d.rsqrt_()                                  # d^-1/2
            torch.sqrt(r, out=s).mul_(r)                    # d^-3/4
            factor = r.mul_(r).mul_(s)                      # d^-7/4
        else:
            torch.pow(d, -beta, out=s)
            factor = d.reciprocal_().mul_(s)                # d^(-beta-1)
        torch.mul(a, s, out=y[part])
        if for_backward:
            scale[part].copy_(s)
            torch.mul(factor.mul_(-2.0 * alpha * beta), a, out=spread_factor[part])
    return y, scale, spread_factor


def _input_gradient(gv: torch.Tensor, xv: torch.Tensor, scale: torch.Tensor, spread_factor: torch.Tensor,
                    dim: int, size: int) -> torch.Tensor:
    """grad_j = g_j d_j^-beta - 2 alpha beta a_j * sum over the windows i holding j of g_i a_i d_i^(-beta-1).

    The windows holding channel j are those centred within size//2 of it (odd sizes are symmetric),
    so the sum is the same centred window sum as in the forward pass.
    """
    starts = _slices(xv)
    scratch = _Scratch(xv, dim, size, min(starts.step, len(xv)))
    grad = torch.empty_like(xv)
    for start in starts:
        part = slice(start, start + starts.step)
        n = len(xv[part])
        torch.mul(gv[part], spread_factor[part], out=scratch.centre(n))
        spread = scratch.window_sums(n).mul_(xv[part])
        torch.addcmul(spread, gv[part], scale[part], out=grad[part])
    return grad


class _LocalResponseNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):  # type: ignore[override]
        xv, dim, channels_last = _channel_view(x)
        with torch.autocast(x.device.type, enabled=False):  # every pass in the input's dtype, on any device
            yv, scale, spread_factor = _normalise(xv, dim, size, alpha, beta, k, for_backward=True)
        ctx.save_for_backward(xv, scale, spread_factor)
        ctx.hyper = (size, dim, channels_last)
        return _back(yv, channels_last)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        xv, scale, spread_factor = ctx.saved_tensors
        size, dim, channels_last = ctx.hyper
        gv = grad_out.permute(0, 2, 3, 1) if channels_last else grad_out  # whatever layout the gradient has
        with torch.autocast(xv.device.type, enabled=False):
            grad = _input_gradient(gv, xv, scale, spread_factor, dim, size)
        return _back(grad, channels_last), None, None, None, None


def local_response_norm(x: torch.Tensor, size: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75, k: float = 2.0) -> torch.Tensor:
    """Paper-formula LRN across the channels (dim 1) of an N x C x ... tensor (alpha is not divided by size)."""
    if size % 2 != 1:
        raise ValueError(f"LRN window size must be odd, got {size}")
    if x.dim() < 3:
        raise ValueError(f"LRN needs an N x C x ... tensor of 3 or more dimensions, got shape {tuple(x.shape)}")
    if torch.is_grad_enabled() and x.requires_grad:
        return _LocalResponseNormFn.apply(x, size, alpha, beta, k)
    xv, dim, channels_last = _channel_view(x)
    with torch.autocast(x.device.type, enabled=False):
        return _back(_normalise(xv, dim, size, alpha, beta, k, for_backward=False)[0], channels_last)


class LocalResponseNorm(nn.Module):
    """The paper's LRN (n=5, alpha=1e-4, beta=0.75, k=2 by default); equals torch's with alpha*size."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
