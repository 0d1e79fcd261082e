"""Every recipe the project offers learns on the paper variant with every norm, from its first steps.

The default config, each preset and each recipe of the LRN-versus-BN experiment, with LRN, BN and no
norm, on the 227x227 network: 20 real steps of the training loop (`start_session`, `train_one_epoch`,
`end_epoch`) on one fixed batch of ten real training images, one of each class, at the recipe's own
rate, augmentation off, so that the optimiser and the model are what is tested ("overfit one batch").
One image a class means the label prior is worth nothing: a loss clearly below ln 10 and a training
accuracy of 3 in 10 or more need the network to tell the images apart. The lowest loss is what is
held against the start, the accuracy is the last step's: with the schedule squeezed into 20 steps, the
build without a norm at 0.02 reached 1.2, rose to 3.5 at the peak rate, and came back to 1.9-2.2 (how
far depends on the thread count), its accuracy at 40-60% throughout. A dead build sits at ln 10
(the paper build with BN did, under the default recipe, before the init was calibrated); a diverging
one stops with a NaN. The recipe's rate is not scaled down to the small batch: the same step on a
noisier gradient is the harder test. Recipes that share their optimiser settings (optimizer, rate,
schedule, momentum, weight decay, init, layer rates) are checked once. The `tuned` recipe is left out:
its rates are what its range test finds for the run at hand (tests/test_lr_finder.py).
"""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from alexnet import experiment, presets
from alexnet.config import TrainConfig, with_variant
from alexnet.data import Cifar10, split_validation
from alexnet.norms import NORMS
from alexnet.train import end_epoch, start_session, train_one_epoch

BATCH, STEPS = 10, 20                     # one batch of one image per class, one step an epoch
VAL_FRACTION = 1 / (BATCH + 1)            # holds out the one spare image (plateau needs a validation split)
OPTIMISER_FIELDS = ("init", "optimizer", "lr", "momentum", "weight_decay", "schedule", "gamma", "features_lr_scale",
                    "label_smoothing", "plateau_factor", "plateau_patience", "min_lr")


def offered_recipes() -> dict[str, TrainConfig]:
    """Every config a user gets without typing a rate: the default, the presets, the experiment's recipes per norm."""
    recipes = {"default": TrainConfig()}
    recipes.update({f"preset {p.name}": p.config() for p in presets.PRESETS.values()})
    for recipe in experiment.RECIPES.values():
        if recipe.searched:
            continue
        for norm in NORMS:
            recipes[f"experiment {recipe.name} ({norm})"] = experiment.recipe_config(recipe.name, norm)
    return recipes


def on_the_paper_variant(config: TrainConfig, norm: str) -> TrainConfig:
    """The recipe as a user gets it on the paper variant: a rate left at its variant's default follows the variant."""
    return replace(with_variant(config, "paper"), norm=norm, pretrained_path=None, freeze_features=False,
                   epochs=STEPS, batch_size=BATCH, max_train_images=0, val_fraction=VAL_FRACTION, early_stopping=0,
                   milestones=presets.scale_milestones(config.milestones, config.epochs, STEPS),
                   crop_padding=0, flip=False, rotate_degrees=0.0, zoom=0.0, log_every=1, threads=0,
                   compile=False, device="cpu", seed=0)


@pytest.fixture(scope="module")
def one_batch(mini_data) -> Cifar10:
    """The first training image of each class, and one spare placed where the seeded split holds out its one image."""
    firsts = [int((mini_data.train_y == c).nonzero()[0]) for c in range(10)]
    spare = int((mini_data.train_y == 0).nonzero()[1])
    positions = torch.arange(BATCH + 1)
    held = int(split_validation(positions, positions, VAL_FRACTION, 0)[2][0])
    order = firsts[:held] + [spare] + firsts[held:]
    return Cifar10(mini_data.train_x[order], mini_data.train_y[order], mini_data.test_x[:10], mini_data.test_y[:10],
                   mini_data.classes, mini_data.source)


def distinct_checks() -> list[tuple[str, TrainConfig]]:
    """One (name, config) per distinct optimiser setting and norm; the name lists the recipes it stands for."""
    by_setting: dict[tuple, tuple[list[str], TrainConfig]] = {}
    for name, config in offered_recipes().items():
        for norm in NORMS:
            paper = on_the_paper_variant(config, norm)
            key = (norm, tuple(getattr(paper, f) for f in OPTIMISER_FIELDS), tuple(paper.milestones))
            by_setting.setdefault(key, ([], paper))[0].append(name)
    return [(f"{config.norm}: {', '.join(sorted(set(names)))}", config) for names, config in by_setting.values()]


CHECKS = distinct_checks()


@pytest.mark.parametrize("config", [c for _, c in CHECKS], ids=[n for n, _ in CHECKS])
def test_the_recipe_learns_on_the_paper_variant(config, one_batch):
    events: list[dict] = []
    session = start_session(config, data=one_batch)
    assert sorted(session.train_y.tolist()) == list(range(10))   # the batch is the ten images, one a class
    for _ in range(STEPS):
        end_epoch(session, train_one_epoch(session, emit=events.append), emit=events.append)
        session.position.next_epoch()
    steps = [e for e in events if e["event"] == "step"]
    epochs = [e for e in events if e["event"] == "epoch"]
    first, best = steps[0]["loss"], min(e["train_loss"] for e in epochs)
    assert len(steps) == STEPS
    assert abs(first - math.log(10)) <= 0.25, f"the first step's loss is {first:.3f}, not near ln 10"
    assert all(math.isfinite(e["loss"]) for e in steps)
    assert best < first - 0.3, f"the loss went from {first:.3f} to at best {best:.3f}: not learning"
    assert epochs[-1]["train_acc"] >= 0.3, f"training accuracy {epochs[-1]['train_acc']:.0%} in the last step"
    print(f"{config.norm} {config.optimizer} {config.lr:g}: loss {first:.2f} -> {epochs[-1]['train_loss']:.2f}, "
          f"highest {max(e['loss'] for e in steps):.2f}, accuracy {epochs[-1]['train_acc']:.0%}")


def test_every_offered_recipe_is_checked():
    """All three norms for the default, every preset and every fixed-rate experiment recipe, in few distinct checks."""
    covered = {name for names, _ in CHECKS for name in names.split(": ", 1)[1].split(", ")}
    assert covered == set(offered_recipes())
    assert len(CHECKS) <= 3 * 5  # shared optimiser settings are checked once
