"""torch.compile of the LRN models, under the training loop's own conditions, gives eager mode's numbers.

The conditions (alexnet.compile_check.loop_stages): a training step, a second one, evaluation under
`torch.no_grad()` in eval mode at another batch size, a step at a third batch size. Each makes dynamo
trace again; the LRN as an autograd.Function failed at the second step under torch 2.11 and broke the
graph under every torch. Channels-last, bf16 autocast and fp32, SGD, real CIFAR-10 images.

Inductor takes one to two minutes to compile a whole model on one CPU thread, so the whole models go
through dynamo and AOTAutograd (backend "aot_eager": the tracing, the fake implementations and the
autograd registration, with eager kernels), and inductor compiles the LRN blocks of the cifar model
with a small head. bench/compile_check.py runs the whole models with inductor, on any device.
"""
import pytest
import torch
from torch import nn

from alexnet.compile_check import TOLERANCE, agrees, check_compiled, loop_stages
from alexnet.models import build

CPU = torch.device("cpu")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@pytest.fixture(autouse=True)
def one_thread_fresh_compiler():
    """One thread, as runs on these machines use (conftest puts the count back), and nothing compiled carried from
    one test into the next."""
    torch.set_num_threads(1)
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def assert_like_eager(results, batch: int, dtype: torch.dtype) -> None:
    """Every stage ran, training ones with gradients, and each is within TOLERANCE of eager mode."""
    assert [r.stage for r in results] == list(loop_stages(batch))
    for r in results:
        assert r.stage.training == (r.gradients is not None)
        assert agrees(r, dtype), (r, TOLERANCE[dtype])


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("variant,batch", [("cifar", 8), ("paper", 4)])
def test_the_models_train_and_evaluate_compiled_as_in_eager_mode(mini_data, variant, batch, precision):
    torch.manual_seed(0)
    results = check_compiled(build(variant, "lrn", dropout=0.0), mini_data.train_x, mini_data.train_y, CPU,
                             DTYPES[precision], batch, backend="aot_eager")
    assert_like_eager(results, batch, DTYPES[precision])


def lrn_blocks_with_a_head() -> nn.Module:
    """conv1 and conv2 of the cifar model with their LRNs (64 channels: the banded matmul in bf16; 192: the
    shifted adds), then a pooled linear head: the layer between the kernels inductor writes around it."""
    torch.manual_seed(0)
    features = build("cifar", "lrn").features[:8]
    model = nn.Sequential(*features, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(192, 10))
    model.input_size = 32
    return model


def test_inductor_compiles_the_layer_between_its_neighbours_as_in_eager_mode(mini_data):
    """In bf16, where the layer takes both of its paths (64 channels: the matmul, 192: the shifted adds; fp32 takes
    only the second) and where torch 2.11 failed."""
    results = check_compiled(lrn_blocks_with_a_head(), mini_data.train_x, mini_data.train_y, CPU,
                             torch.bfloat16, 8, backend="inductor")
    assert_like_eager(results, 8, torch.bfloat16)


@pytest.mark.parametrize("variant", ["cifar", "paper"])
def test_the_layer_leaves_the_model_one_graph(variant):
    """fullgraph=True raises at a graph break: the LRN is one op to dynamo, in training and in evaluation."""
    torch.manual_seed(0)
    model = build(variant, "lrn", dropout=0.0).to(memory_format=torch.channels_last)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x = torch.randn(2, 3, model.input_size, model.input_size).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        compiled(x).float().sum().backward()
    model.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(x[:1]), model(x[:1]))
