"""Local response normalisation as the 2012 paper writes it, fast on a CPU, and compilable.

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
  (evaluation, prediction) neither is computed nor kept;
- few fresh tensors: a large new CPU tensor is new memory the kernel must
  fault in, so results are written over buffers that are no longer needed.

For `torch.compile` the layer is three `torch.library` custom ops (the forward,
the forward that also returns what the backward needs, and the backward), each
with a fake implementation that gives only the outputs' shape and layout, and
the autograd formula registered on the op. The compiler then sees each op as
one call and never traces the in-place work inside it; the ops return fresh
tensors that alias neither their inputs nor each other, and the fake
implementations lay them out as the kernels leave them.
(The layer used to be a `torch.autograd.Function`: its `out=` writes broke
dynamo's graph under every torch, and torch 2.11 failed with an AssertionError
on tracing it again, as a training loop does after its first step.)

Splitting the work into cache-sized slices was tried: faster on an idle CPU,
but every slice multiplies the number of parallel regions, and on a CPU that
other processes keep busy each region waits for a descheduled thread (a
training step became several times slower). In bf16 the result is within a
few bf16 rounding steps of the exact one (tests/test_lrn.py bounds it).
bench/lrn_vs_bn.py measures it against batch norm and torch's module;
bench/compile_check.py checks compiled training against eager under any torch.
"""
import torch
from torch import nn


def _layout(x: torch.Tensor) -> torch.memory_format:
    """Channels-last for channels-last 4-d tensors, else contiguous: the layout of every output of the ops."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _forth(v: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A tensor in x's layout seen as _channel_view sees x."""
    return v.permute(0, 2, 3, 1) if channels_last else v


def _back(v: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """What _forth undoes."""
    return v.permute(0, 3, 1, 2) if channels_last else v


def _channel_view(x: torch.Tensor) -> tuple[torch.Tensor, int, bool]:
    """x, dense in its layout, with its channel axis where it is cheapest to slide along: last for channels-last."""
    if _layout(x) == torch.channels_last:
        return _forth(x, True), 3, True
    return x.contiguous(), 1, False


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
        buffer, squares = _padded(xv, dim, size)
        squares.addcmul_(xv, xv, value=alpha)
        # k is added once, to the sum: spread over the window as k/size it would round `size` times in bf16.
        denom = _window_sums(buffer, size, dim, xv.shape[dim]).add_(k)
        free = squares                                # d^-beta goes here: the squares are summed, ...
        if for_backward:                              # ... unless it is an output (then dense: see the ops)
            del buffer, squares
            free = torch.empty_like(xv)
    if beta == 0.75:
        r = denom.rsqrt_()                            # d^-1/2, written over d
        scale = torch.sqrt(r, out=free).mul_(r)       # d^-3/4
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
    so the sum is the same centred window sum as in the forward pass. The result is dense in the layout
    of `xv`, whatever layout the gradient `gv` comes in.
    """
    if _by_matmul(xv, dim):
        channels = xv.shape[dim]
        terms = torch.addcmul(xv.new_zeros(()), gv, factor, value=-2.0 * alpha * beta, out=torch.empty_like(xv))
        spread = torch.mm(terms.reshape(-1, channels), _band(channels, size, xv.dtype, xv.device)).view(xv.shape)
    else:
        buffer, centre = _padded(xv, dim, size)
        torch.addcmul(centre.new_zeros(()), gv, factor, value=-2.0 * alpha * beta, out=centre)
        spread = _window_sums(buffer, size, dim, xv.shape[dim])
        del buffer, centre
    return spread.mul_(xv).addcmul_(gv, scale)


# The ops. Their outputs are fresh tensors, dense in the layout of x (channels-last or contiguous, see _layout):
# inductor checks each output's strides when the compiled code runs, and expected dense ones (torch 2.14.1) even
# where a fake implementation gave the strides of a view into a larger buffer.
# Its on-disk cache can serve code compiled against an earlier fake implementation of an op of the same name
# (seen under torch 2.11): after changing what an op returns, rename it or clear $TORCHINDUCTOR_CACHE_DIR.

@torch.library.custom_op("alexnet::lrn", mutates_args=())
def _lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """y alone, keeping nothing for a backward pass: evaluation and prediction."""
    xv, dim, channels_last = _channel_view(x)
    return _back(_forward(xv, dim, size, alpha, beta, k, for_backward=False)[0], channels_last)


@torch.library.custom_op("alexnet::lrn_for_backward", mutates_args=())
def _lrn_for_backward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y, d^-beta and a d^(-beta-1): training, whose backward reuses the last two instead of computing powers."""
    xv, dim, channels_last = _channel_view(x)
    y, scale, factor = _forward(xv, dim, size, alpha, beta, k, for_backward=True)
    return _back(y, channels_last), _back(scale, channels_last), _back(factor, channels_last)


@torch.library.custom_op("alexnet::lrn_backward", mutates_args=())
def _lrn_backward(grad: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, factor: torch.Tensor,
                  size: int, alpha: float, beta: float) -> torch.Tensor:
    """The input's gradient from the output's (in any layout) and what lrn_for_backward returned."""
    xv, dim, channels_last = _channel_view(x)
    grad_x = _input_gradient(_forth(grad, channels_last), xv, _forth(scale, channels_last),
                             _forth(factor, channels_last), dim, size, alpha, beta)
    return _back(grad_x, channels_last)


def _like(x: torch.Tensor) -> torch.Tensor:
    """An empty tensor laid out as the ops lay out their outputs: dense in x's layout."""
    return torch.empty_like(x, memory_format=_layout(x))


_lrn.register_fake(lambda x, size, alpha, beta, k: _like(x))
_lrn_for_backward.register_fake(lambda x, size, alpha, beta, k: (_like(x), _like(x), _like(x)))
_lrn_backward.register_fake(lambda grad, x, scale, factor, size, alpha, beta: _like(x))


def _setup_context(ctx, inputs: tuple, output: tuple) -> None:
    x, size, alpha, beta, _k = inputs
    _y, scale, factor = output
    ctx.mark_non_differentiable(scale, factor)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for those two: nothing flows back through them
    ctx.save_for_backward(x, scale, factor)
    ctx.hyper = (size, alpha, beta)


def _backward(ctx, grad_y: torch.Tensor | None, _grad_scale: None, _grad_factor: None) -> tuple:
    x, scale, factor = ctx.saved_tensors
    grad_x = None if grad_y is None else _lrn_backward(grad_y, x, scale, factor, *ctx.hyper)
    return grad_x, None, None, None, None


_lrn_for_backward.register_autograd(_backward, setup_context=_setup_context)


def local_response_norm(x: torch.Tensor, size: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75, k: float = 2.0) -> torch.Tensor:
    """Paper-formula LRN across the channels (dim 1) of an N x C x ... tensor (alpha is not divided by size)."""
    if size % 2 != 1:
        raise ValueError(f"LRN window size must be odd, got {size}")
    if x.dim() < 3:
        raise ValueError(f"LRN needs an N x C x ... tensor of 3 or more dimensions, got shape {tuple(x.shape)}")
    if torch.is_grad_enabled() and x.requires_grad:
        return _lrn_for_backward(x, size, alpha, beta, k)[0]
    return _lrn(x, size, alpha, beta, k)


class LocalResponseNorm(nn.Module):
    """The paper's LRN (n=5, alpha=1e-4, beta=0.75, k=2 by default); equals torch's with alpha*size."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
