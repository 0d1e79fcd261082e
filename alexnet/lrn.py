"""Local response normalisation as the 2012 paper writes it, fast on a CPU.

    b_c = a_c / (k + alpha * sum_{c' in window(c)} a_{c'}^2) ** beta

`torch.nn.LocalResponseNorm` divides `alpha` by the window size (the paper's
formula is torch's module with alpha*size) and runs a 3-d average pool that is
slow on CPUs. Here the layer is about twenty whole-tensor elementwise passes in
the input's own layout and dtype (under bf16 autocast it runs in bf16), chosen
to be few and cheap:

- the window sum is shifted adds of a zero-padded copy of alpha * a^2 along
  the channel axis (for channels-last tensors their contiguous innermost
  axis: no copy to NCHW); for channels-last bf16/fp16 tensors of at most 128
  channels it is instead one matrix product with a banded 0/1 matrix (k and
  alpha folded in), which the CPU's bf16 units do faster, in fewer passes;
- d^-3/4 is rsqrt(d) * sqrt(rsqrt(d)), not a slow fractional `pow`;
- the backward pass is written out and reuses the forward pass's d^-beta and
  a d^(-beta-1), so it computes no power at all; with no gradient wanted
  (evaluation, prediction) neither is kept;
- few fresh tensors: a large new CPU tensor is new memory the kernel must
  fault in, so results are written over buffers that are no longer needed.

Splitting the work into cache-sized slices was tried: faster on an idle CPU,
but every slice multiplies the number of parallel regions, and on a CPU that
other processes keep busy each region waits for a descheduled thread (a
training step became several times slower). In bf16 the result is within a
few bf16 rounding steps of the exact one (tests/test_lrn.py bounds it); it also
runs under torch.compile. bench/lrn_vs_bn.py measures it against batch norm and
torch's module.
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


MATMUL_DTYPES = (torch.bfloat16, torch.float16)  # window sums by a banded matrix product for these dtypes ...
MATMUL_MAX_CHANNELS = 128                          # ... and channel counts (the product costs 2C per value)
_bands: dict[tuple, torch.Tensor] = {}


def _band(channels: int, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """B[i, j] = 1 where |i - j| <= size // 2: rows @ B sums each row over the window (cached, never written)."""
    key = (channels, size, dtype, device)
    if key not in _bands:
        i = torch.arange(channels, device=device)
        _bands[key] = ((i[:, None] - i[None, :]).abs() <= size // 2).to(dtype)
    return _bands[key]


def _by_matmul(xv: torch.Tensor, dim: int) -> bool:
    return dim == xv.dim() - 1 and xv.dtype in MATMUL_DTYPES and xv.shape[dim] <= MATMUL_MAX_CHANNELS


def _padded(like: torch.Tensor, dim: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero buffer with size // 2 extra slots at both ends of `dim`, and the view of its centre."""
    half = size // 2
    shape = list(like.shape)
    shape[dim] += 2 * half
    buffer = like.new_zeros(shape)
    return buffer, buffer.narrow(dim, half, like.shape[dim])


def _window_sums(buffer: torch.Tensor, size: int, dim: int, length: int) -> torch.Tensor:
    """out[c] = buffer[c] + ... + buffer[c + size - 1] along `dim`: the centred window sum of the padded values."""
    if size == 1:
        return buffer.clone()
    out = torch.add(buffer.narrow(dim, 0, length), buffer.narrow(dim, 1, length))
    for offset in range(2, size):
        out.add_(buffer.narrow(dim, offset, length))
    return out


def _forward(xv: torch.Tensor, dim: int, size: int, alpha: float, beta: float, k: float, for_backward: bool
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """y = a d^-beta; with `for_backward` also d^-beta and a d^(-beta-1) (in the same dtype as a)."""
    if _by_matmul(xv, dim):
        channels = xv.shape[dim]
        squares = xv * xv
        rows = squares.reshape(-1, channels)
        k_row = torch.full((channels,), k, dtype=xv.dtype, device=xv.device)
        denom = torch.addmm(k_row, rows, _band(channels, size, xv.dtype, xv.device), alpha=alpha).view(xv.shape)
        free = squares                                # d^-beta goes here: the squares are summed
    else:
        buffer, free = _padded(xv, dim, size)
        free.addcmul_(xv, xv, value=alpha)
        # k is added once, to the sum: spread over the window as k/size it would round `size` times in bf16.
        denom = _window_sums(buffer, size, dim, xv.shape[dim]).add_(k)
    if beta == 0.75:
        r = denom.rsqrt_()                            # d^-1/2, written over d
        scale = torch.sqrt(r, out=free).mul_(r)       # d^-3/4, written over memory the sums are done with
    else:
        scale = torch.pow(denom, -beta, out=free)
    y = xv * scale
    if not for_backward:
        return y, None, None
    if beta == 0.75:
        factor = r.mul_(r).mul_(y)                    # a d^-7/4, over r
    else:
        factor = denom.reciprocal_().mul_(y)          # a d^(-beta-1), over d
    return y, scale, factor


def _input_gradient(gv: torch.Tensor, xv: torch.Tensor, scale: torch.Tensor, factor: torch.Tensor,
                    dim: int, size: int, alpha: float, beta: float) -> torch.Tensor:
    """grad_j = g_j d_j^-beta - 2 alpha beta a_j * (sum over the windows i holding j of g_i a_i d_i^(-beta-1)).

    The windows holding channel j are those centred within size//2 of it (odd sizes are symmetric),
    so the sum is the same centred window sum as in the forward pass.
    """
    if _by_matmul(xv, dim):
        channels = xv.shape[dim]
        terms = torch.addcmul(xv.new_zeros(()), gv, factor, value=-2.0 * alpha * beta)
        spread = torch.mm(terms.reshape(-1, channels), _band(channels, size, xv.dtype, xv.device)).view(xv.shape)
    else:
        buffer, centre = _padded(xv, dim, size)
        torch.addcmul(centre.new_zeros(()), gv, factor, value=-2.0 * alpha * beta, out=centre)
        spread = _window_sums(buffer, size, dim, xv.shape[dim])
        del buffer, centre
    return spread.mul_(xv).addcmul_(gv, scale)


class _LocalResponseNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):  # type: ignore[override]
        xv, dim, channels_last = _channel_view(x)
        yv, scale, factor = _forward(xv, dim, size, alpha, beta, k, for_backward=True)
        if torch.compiler.is_compiling():  # it cannot save tensors that alias others (views, in-place results)
            scale, factor = scale.clone(), factor.clone()
        ctx.save_for_backward(x, scale, factor)  # x itself, not a view of it, for the same reason
        ctx.hyper = (size, alpha, beta)
        return _back(yv, channels_last)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, scale, factor = ctx.saved_tensors
        size, alpha, beta = ctx.hyper
        xv, dim, channels_last = _channel_view(x)
        gv = grad_out.permute(0, 2, 3, 1) if channels_last else grad_out  # whatever layout the gradient has
        grad = _input_gradient(gv, xv, scale, factor, dim, size, alpha, beta)
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
    return _back(_forward(xv, dim, size, alpha, beta, k, for_backward=False)[0], channels_last)


class LocalResponseNorm(nn.Module):
    """The paper's LRN (n=5, alpha=1e-4, beta=0.75, k=2 by default); equals torch's with alpha*size."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
