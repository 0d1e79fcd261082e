"""Every variant and norm builds, matches the paper's shapes and counts, starts at chance and takes a training step."""
import math

import pytest
import torch
from torch import nn

from alexnet.data import normalization, to_model_input
from alexnet.initialization import INITS, calibrate
from alexnet.lrn import LocalResponseNorm
from alexnet.models import VARIANTS, build, count_parameters, summary


@pytest.mark.parametrize("variant, norm", [(v, n) for v in VARIANTS for n in VARIANTS[v].norms])
def test_builds_and_takes_a_training_step(variant, norm):
    torch.manual_seed(0)
    model = build(variant, norm)
    x = torch.randn(2, 3, model.input_size, model.input_size)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):  # the last layer starts at zero: the first step trains it alone, the second all layers
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), torch.tensor([1, 7]))
        loss.backward()
        opt.step()
    assert model(x).shape == (2, 10)
    assert torch.isfinite(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()) if a.dim() > 1)


@pytest.mark.parametrize("variant, norm", [(v, n) for v in VARIANTS for n in VARIANTS[v].norms])
def test_every_build_starts_near_chance_on_real_images(variant, norm, mini_data):
    """Training mode (dropout on, BN on batch statistics), before any step: a loss of ln 10 +- 0.25 for every
    init. Kaiming's draw alone started the paper variant with BN at 4.36 and died in its first SGD steps."""
    images, labels = mini_data.test_x[:16], mini_data.test_y[:16]
    for init in INITS:
        torch.manual_seed(0)
        model = build(variant, norm, init=init).train()
        with torch.no_grad():
            logits = model(to_model_input(images, model.input_size, *normalization(model)))
        loss = nn.functional.cross_entropy(logits, labels).item()
        assert abs(loss - math.log(10)) <= 0.25, (init, loss)


def test_lsuv_gives_every_layer_a_unit_scale_whatever_the_norm():
    """On its calibration batch, in training mode, each conv and hidden FC layer's output has second moment 1,
    for LRN, BN and no norm alike: the norms start from one scale. BN's running statistics and the caller's
    random stream are left as they were."""
    for norm in ("lrn", "bn", "none"):
        torch.manual_seed(0)
        model = build("cifar", norm, init="kaiming")
        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        rng = torch.get_rng_state()
        calibrate(model, layers)
        assert torch.equal(rng, torch.get_rng_state())
        assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
        moments = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: moments.append(out.pow(2).mean().item())) for m in layers]
        noise = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        torch.manual_seed(0)
        with torch.no_grad():
            model.train()(noise)
        for h in hooks:
            h.remove()
        assert moments == pytest.approx([1.0] * len(layers), rel=1e-3), (norm, moments)


def test_lsuv_refuses_a_layer_with_a_bias_rather_than_miss_its_unit_scale():
    """Its one pass divides each output as the weight is divided, which a bias would break."""
    model = build("cifar", "bn", init="kaiming")
    conv = model.features[0]
    nn.init.ones_(conv.bias)
    before = conv.weight.clone()
    with pytest.raises(ValueError, match="without bias"):
        calibrate(model, [conv])
    assert torch.equal(conv.weight, before)


def test_paper_variant_matches_the_2012_architecture():
    model = build("paper", "lrn")
    rows = {r.name: r for r in summary(model)}
    convs = [r for r in summary(model) if r.kind == "Conv2d"]
    assert [c.output_shape for c in convs] == [(96, 55, 55), (256, 27, 27), (384, 13, 13), (384, 13, 13), (256, 13, 13)]
    assert rows["features.3"].output_shape == (96, 27, 27)      # overlapping pool 3/2
    assert rows["features.14"].output_shape == (256, 6, 6)
    grouped = [m.groups for m in model.features if isinstance(m, nn.Conv2d)]
    assert grouped == [1, 2, 1, 2, 2]                            # the two-GPU split
    assert [m.out_features for m in model.classifier if isinstance(m, nn.Linear)] == [4096, 4096, 10]
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    # The paper's 60 M parameters are for 1000 classes; with 10 classes the count is exact:
    assert count_parameters(model) == 56_909_194
    assert count_parameters(build("paper", "lrn", num_classes=1000)) == 60_965_224
    lrn = [m for m in model.features if isinstance(m, LocalResponseNorm)]
    assert len(lrn) == 2 and (lrn[0].size, lrn[0].alpha, lrn[0].beta, lrn[0].k) == (5, 1e-4, 0.75, 2.0)


def test_norm_sits_after_the_relu_of_conv1_and_conv2_only():
    for norm, kind in (("lrn", LocalResponseNorm), ("bn", nn.BatchNorm2d)):
        model = build("cifar", norm)
        positions = [i for i, m in enumerate(model.features) if isinstance(m, kind)]
        assert positions == [2, 6]
        assert all(isinstance(model.features[i - 1], nn.ReLU) for i in positions)


def test_relus_are_not_in_place():
    for variant in VARIANTS:
        assert not any(getattr(m, "inplace", False) for m in build(variant, VARIANTS[variant].norms[-1]).modules())


def test_cifar_variant_is_small_and_32x32_native():
    model = build("cifar", "bn")
    assert model.input_size == 32
    assert count_parameters(model) < 5_000_000
    assert summary(model)[-1].output_shape == (10,)


def test_summary_counts_match_the_model():
    for variant in VARIANTS:
        model = build(variant, "bn" if "bn" in VARIANTS[variant].norms else VARIANTS[variant].norms[0])
        rows = summary(model)
        assert sum(r.parameters for r in rows) == count_parameters(model)
        conv1 = rows[0]
        assert conv1.mult_adds == conv1.output_shape[1] * conv1.output_shape[2] * conv1.output_shape[0] * 3 * \
            model.features[0].kernel_size[0] ** 2


def test_paper_init_sets_biases_of_conv2_4_5_and_hidden_fc_to_one():
    model = build("paper", "lrn", init="paper")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [float(c.bias.detach().mean()) for c in convs] == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert [float(f.bias.detach().mean()) for f in fcs] == [1.0, 1.0, 0.0]
    assert abs(float(convs[2].weight.detach().std()) - 0.01) < 1e-3


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        build("vgg")
    with pytest.raises(ValueError, match="lrn, bn, none"):
        build("cifar", "layernorm")
