"""The fast paper-formula LRN equals torch's LocalResponseNorm (with alpha*size), values and gradients."""
import pytest
import torch

from alexnet.lrn import LocalResponseNorm, local_response_norm


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size", [3, 5, 7])
def test_matches_torch_to_1e5(channels_last, size):
    torch.manual_seed(0)
    x = torch.randn(4, 33, 9, 7) * 4
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref_in = x.clone().requires_grad_()
    our_in = x.clone().requires_grad_()
    reference = torch.nn.LocalResponseNorm(size, alpha=1e-4 * size, beta=0.75, k=2.0)(ref_in)
    ours = LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=2.0)(our_in)
    grad = torch.randn_like(reference)
    reference.backward(grad)
    ours.backward(grad)
    assert torch.allclose(ours, reference, atol=1e-5, rtol=1e-5)
    assert torch.allclose(our_in.grad, ref_in.grad, atol=1e-5, rtol=1e-5)
    assert ours.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_matches_the_formula_written_out():
    torch.manual_seed(1)
    a = torch.randn(1, 8, 2, 2, dtype=torch.double) * 10
    n, alpha, beta, k = 5, 1e-4, 0.75, 2.0
    expected = torch.empty_like(a)
    for c in range(8):
        lo, hi = max(0, c - n // 2), min(7, c + n // 2)
        expected[:, c] = a[:, c] / (k + alpha * (a[:, lo:hi + 1] ** 2).sum(1)) ** beta
    assert torch.allclose(local_response_norm(a, n, alpha, beta, k), expected, atol=1e-12)


def test_gradcheck():
    x = torch.randn(2, 7, 3, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, 5, 1e-2, 0.75, 2.0), (x,))


def test_runs_in_bfloat16():
    x = torch.randn(2, 16, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    y = local_response_norm(x)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and x.grad is not None


def test_even_size_is_refused():
    with pytest.raises(ValueError, match="odd"):
        local_response_norm(torch.randn(1, 4, 2, 2), size=4)
