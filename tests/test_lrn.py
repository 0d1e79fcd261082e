"""The fast paper-formula LRN equals torch's LocalResponseNorm (with alpha*size), values and gradients.

Both of its power paths are covered: beta = 3/4 (the paper's, computed with rsqrt) and any other
beta (computed with pow); both layouts (the window slides along the innermost axis of a
channels-last tensor); with and without autograd (evaluation takes a path that saves nothing). The
layer's three torch.library ops pass opcheck; tests/test_lrn_compile.py compiles it in the models.
"""
import pytest
import torch

from alexnet.lrn import LocalResponseNorm, local_response_norm


def _torch_lrn(x, size, alpha, beta, k):
    return torch.nn.LocalResponseNorm(size, alpha=alpha * size, beta=beta, k=k)(x)


@pytest.fixture(params=["shifted adds", "banded matmul"])
def window(request, monkeypatch):
    """Run a test with each way of summing the window (by default the matmul serves bf16/fp16 channels-last
    tensors of up to 128 channels; here it serves every dtype, so float32 and float64 check it exactly)."""
    import alexnet.lrn as lrn

    dtypes = (torch.float16, torch.bfloat16, torch.float32, torch.float64) if request.param == "banded matmul" else ()
    monkeypatch.setattr(lrn, "MATMUL_DTYPES", dtypes)
    return request.param


@pytest.mark.parametrize("beta", [0.75, 0.6])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_matches_torch_to_1e5(window, channels_last, size, beta):
    torch.manual_seed(0)
    x = torch.randn(4, 33, 9, 7) * 4
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref_in = x.clone().requires_grad_()
    our_in = x.clone().requires_grad_()
    reference = _torch_lrn(ref_in, size, 1e-4, beta, 2.0)
    ours = LocalResponseNorm(size, alpha=1e-4, beta=beta, k=2.0)(our_in)
    grad = torch.randn_like(reference)
    reference.backward(grad)
    ours.backward(grad)
    assert torch.allclose(ours, reference, atol=1e-5, rtol=1e-5)
    assert torch.allclose(our_in.grad, ref_in.grad, atol=1e-5, rtol=1e-5)
    assert ours.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("channels_last", [False, True])
def test_large_activations_where_the_norm_bites(window, channels_last):
    """With alpha = 1e-2 and activations of tens, d is far from k: every term of the gradient matters."""
    torch.manual_seed(3)
    x = torch.randn(2, 64, 5, 5) * 30
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref_in, our_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    reference = _torch_lrn(ref_in, 5, 1e-2, 0.75, 1.0)
    ours = local_response_norm(our_in, 5, 1e-2, 0.75, 1.0)
    assert (ours.abs() < 0.5 * x.abs()).float().mean() > 0.5  # the norm is doing real work here
    grad = torch.randn_like(reference)
    reference.backward(grad)
    ours.backward(grad)
    assert torch.allclose(ours, reference, atol=1e-5, rtol=1e-5)
    assert torch.allclose(our_in.grad, ref_in.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("input_last,grad_last", [(True, False), (False, True)])
def test_a_gradient_in_the_other_layout(window, input_last, grad_last):
    torch.manual_seed(2)
    x = torch.randn(3, 16, 6, 5) * 3
    fmt = lambda t, last: t.contiguous(memory_format=torch.channels_last) if last else t.contiguous()  # noqa: E731
    ref_in, our_in = fmt(x, input_last).clone().requires_grad_(), fmt(x, input_last).clone().requires_grad_()
    grad = fmt(torch.randn(3, 16, 6, 5), grad_last)
    _torch_lrn(ref_in, 5, 1e-4, 0.75, 2.0).backward(grad)
    local_response_norm(our_in).backward(grad)
    assert torch.allclose(our_in.grad, ref_in.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.75, 0.6])
@pytest.mark.parametrize("channels_last", [False, True])
def test_without_autograd_it_gives_the_same_values(window, channels_last, beta):
    torch.manual_seed(4)
    x = torch.randn(2, 24, 7, 7) * 5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with_grad = local_response_norm(x.clone().requires_grad_(), 5, 1e-4, beta, 2.0).detach()
    with torch.no_grad():
        no_grad = local_response_norm(x.clone().requires_grad_(), 5, 1e-4, beta, 2.0)
    plain = local_response_norm(x, 5, 1e-4, beta, 2.0)  # an input that does not require grad
    with torch.inference_mode():
        inference = local_response_norm(x, 5, 1e-4, beta, 2.0)
    for out in (no_grad, plain, inference):
        assert not out.requires_grad
        assert torch.allclose(out, with_grad, atol=1e-6, rtol=1e-6)
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.allclose(plain, _torch_lrn(x, 5, 1e-4, beta, 2.0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_matches_the_formula_written_out(window, beta):
    torch.manual_seed(1)
    a = torch.randn(1, 8, 2, 2, dtype=torch.double) * 10
    n, alpha, k = 5, 1e-4, 2.0
    expected = torch.empty_like(a)
    for c in range(8):
        lo, hi = max(0, c - n // 2), min(7, c + n // 2)
        expected[:, c] = a[:, c] / (k + alpha * (a[:, lo:hi + 1] ** 2).sum(1)) ** beta
    assert torch.allclose(local_response_norm(a, n, alpha, beta, k), expected, atol=1e-12)
    assert torch.allclose(local_response_norm(a.contiguous(memory_format=torch.channels_last), n, alpha, beta, k),
                          expected, atol=1e-12)


@pytest.mark.parametrize("beta", [0.75, 0.6])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_gradcheck(window, size, channels_last, beta):
    x = torch.randn(2, 9, 3, 3, dtype=torch.double)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, 1e-2, beta, 2.0), (x,))


def test_other_ranks_normalise_along_dim_1():
    x = torch.randn(3, 10, 11, requires_grad=True)
    ref_in = x.detach().clone().requires_grad_()
    ours, reference = local_response_norm(x), _torch_lrn(ref_in, 5, 1e-4, 0.75, 2.0)
    ours.sum().backward()
    reference.sum().backward()
    assert torch.allclose(ours, reference, atol=1e-6) and torch.allclose(x.grad, ref_in.grad, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_bfloat16_stays_within_bfloat16_precision(window, channels_last):
    """bf16 in, bf16 math, bf16 out: off the exact answer (for the same rounded input) by about one bf16 step.

    bf16 keeps 8 significant bits, a relative step of 2^-8 = 0.39%; d = k + alpha S is rounded to it
    and d^-3/4 takes three roundings (rsqrt, sqrt, product), so errors of a few steps at most are expected.
    """
    torch.manual_seed(5)
    x = (torch.randn(4, 32, 8, 8) * 20).to(torch.bfloat16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    exact_in = x.detach().double().requires_grad_()
    y = local_response_norm(x, 5, 1e-3, 0.75, 2.0)  # alpha large enough that d spans 2 to ~11
    exact = local_response_norm(exact_in, 5, 1e-3, 0.75, 2.0)
    grad = torch.randn(4, 32, 8, 8, dtype=torch.double)
    y.backward(grad.to(torch.bfloat16))
    exact.backward(grad)
    assert y.dtype == x.grad.dtype == torch.bfloat16
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    relative = ((y.double() - exact).abs() / exact.abs().clamp_min(1e-3)).flatten()
    assert relative.max() < 6 * 2 ** -8 and relative.pow(2).mean().sqrt() < 1.5 * 2 ** -8
    grad_error = (x.grad.double() - exact_in.grad).norm() / exact_in.grad.norm()
    assert grad_error < 2 * 2 ** -8


def test_the_matmul_serves_low_precision_channels_last_tensors_of_up_to_128_channels():
    """Which path a tensor takes, as the profiler sees it: a matrix product forward and backward, or none."""
    def routed(dtype, channels, channels_last=True):
        x = torch.zeros(2, channels, 3, 3, dtype=dtype)
        x = (x.contiguous(memory_format=torch.channels_last) if channels_last else x).requires_grad_()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            local_response_norm(x).sum().backward()
        ops = {event.key for event in profile.key_averages()}
        assert ("aten::addmm" in ops) == ("aten::mm" in ops)  # the forward's product goes with the backward's
        return "aten::addmm" in ops

    assert routed(torch.bfloat16, 64) and routed(torch.float16, 128)
    assert not routed(torch.bfloat16, 192) and not routed(torch.float32, 64)
    assert not routed(torch.bfloat16, 64, channels_last=False)


def test_a_strided_view_is_normalised_like_a_copy():
    torch.manual_seed(7)
    base = torch.randn(3, 12, 8, 10) * 5
    view = base[:, :, ::2, 1::3]  # neither contiguous nor channels-last
    assert not view.is_contiguous() and not view.is_contiguous(memory_format=torch.channels_last)
    v, c = view.clone().requires_grad_(), view.contiguous().requires_grad_()
    grad = torch.randn(view.shape)
    local_response_norm(v).backward(grad)
    _torch_lrn(c, 5, 1e-4, 0.75, 2.0).backward(grad)
    assert torch.allclose(local_response_norm(view), _torch_lrn(view.contiguous(), 5, 1e-4, 0.75, 2.0), atol=1e-6)
    assert torch.allclose(v.grad, c.grad, atol=1e-6)


def test_in_a_model_under_bf16_autocast():
    from alexnet.models import build

    torch.manual_seed(0)
    model = build("cifar", "lrn").to(memory_format=torch.channels_last)
    inputs = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(inputs)
    logits.float().sum().backward()
    assert torch.isfinite(logits.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_even_size_and_missing_channel_axis_are_refused():
    with pytest.raises(ValueError, match="odd"):
        local_response_norm(torch.randn(1, 4, 2, 2), size=4)
    with pytest.raises(ValueError, match="3 or more dimensions"):
        local_response_norm(torch.randn(4, 6))


@pytest.mark.parametrize("beta", [0.75, 0.6])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_ops_pass_opcheck(window, channels_last, beta):
    """torch.library.opcheck: the schema (nothing mutated or aliased), the fake implementations (shapes,
    strides, dtypes) against the real outputs, the autograd registration, and tracing by AOTAutograd."""
    torch.manual_seed(9)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(2, 9, 4, 3, dtype=torch.double) * 5).contiguous(memory_format=fmt)
    hyper = (5, 1e-2, beta)
    torch.library.opcheck(torch.ops.alexnet.lrn, (x, *hyper, 2.0))
    torch.library.opcheck(torch.ops.alexnet.lrn_for_backward, (x.clone().requires_grad_(), *hyper, 2.0))
    _, scale, factor = torch.ops.alexnet.lrn_for_backward(x, *hyper, 2.0)
    grad = torch.randn(2, 9, 4, 3, dtype=torch.double)  # contiguous: the other layout when x is channels-last
    torch.library.opcheck(torch.ops.alexnet.lrn_backward, (grad, x, scale, factor, *hyper))


def test_the_ops_pass_opcheck_on_the_bfloat16_channels_last_path():
    """The layout and dtype that the engine's training gives the layer (its banded-matmul path)."""
    x = (torch.randn(2, 16, 5, 5) * 3).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.alexnet.lrn, (x, 5, 1e-4, 0.75, 2.0))
    torch.library.opcheck(torch.ops.alexnet.lrn_for_backward, (x.clone().requires_grad_(), 5, 1e-4, 0.75, 2.0))
    _, scale, factor = torch.ops.alexnet.lrn_for_backward(x, 5, 1e-4, 0.75, 2.0)
    torch.library.opcheck(torch.ops.alexnet.lrn_backward, (torch.randn_like(x), x, scale, factor, 5, 1e-4, 0.75))


def test_evaluation_runs_the_op_that_keeps_nothing_for_a_backward_pass():
    """Without a gradient wanted the layer computes y alone (no d^-beta or a d^(-beta-1) to keep)."""
    x = torch.randn(2, 16, 5, 5)

    def ops_run(fn) -> set[str]:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
        return {e.key for e in prof.key_averages() if e.key.startswith("alexnet::")}

    with torch.no_grad():
        assert ops_run(lambda: local_response_norm(x.requires_grad_())) == {"alexnet::lrn"}
    assert ops_run(lambda: local_response_norm(x.detach())) == {"alexnet::lrn"}
    assert ops_run(lambda: local_response_norm(x.detach().requires_grad_()).sum().backward()) == {
        "alexnet::lrn_for_backward", "alexnet::lrn_backward"}
