"""Named training recipes: the published AlexNet-on-CIFAR-10 setups and a quick CPU demo.

Each preset is a complete `TrainConfig` plus one line saying what it reproduces and its `source`
(the repository or report it follows). Where the source deviates from what this project can
honestly do, the config says so in `note`: every preset holds out its own validation split,
because using the test set for validation (as the faithful reimplementation and the "Revisiting
AlexNet" notebook did) makes the test accuracy optimistic.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .config import TrainConfig

__all__ = ["Preset", "PRESETS", "get", "names", "scale_milestones"]


def scale_milestones(milestones: list[int], from_epochs: int, to_epochs: int) -> list[int]:
    """Move step-schedule milestones to the same fractions of a run of `to_epochs` (5,8 of 10 -> 1,2 of 2)."""
    if from_epochs <= 0 or to_epochs <= 0:
        return []
    scaled = {min(max(round(m * to_epochs / from_epochs), 1), to_epochs) for m in milestones}
    return sorted(scaled)


@dataclass(frozen=True)
class Preset:
    name: str           # the key used by the command line (--preset NAME)
    title: str          # what the app's picker shows
    description: str    # one line: what it reproduces and what to expect
    source: str         # where the recipe comes from
    base: TrainConfig   # never handed out: `config()` returns a fresh copy

    def config(self, epochs: int | None = None) -> TrainConfig:
        """A fresh config; with `epochs`, the step-schedule milestones keep their place in the run."""
        config = TrainConfig.from_dict(self.base.to_dict())
        if epochs is not None and epochs != config.epochs:
            config = replace(config, epochs=epochs,
                             milestones=scale_milestones(config.milestones, config.epochs, epochs))
        return config


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        name="paper-2012",
        title="paper 2012 (LRN, SGD)",
        description="The 2012 network at 227x227 with LRN, trained as the faithful PyTorch reimplementation did: "
                    "SGD 0.01 with momentum, lr x0.1 at 50% and 80% of the epochs, flips only (it reports 76.6% "
                    "after 10 epochs at 760 s per epoch on an M1 Max: a GPU job). One change: this project's LSUV "
                    "init instead of PyTorch's layer defaults, with which the network barely moved in its first "
                    "steps (loss 2.30 to 2.27 in 16 steps on one batch, where LSUV reached 1.56).",
        source="gregorycotton/alexnet on GitHub, a faithful PyTorch reimplementation of the paper",
        base=TrainConfig(variant="paper", norm="lrn", init="lsuv", optimizer="sgd", lr=0.01, momentum=0.9,
                         weight_decay=5e-4, schedule="step", milestones=[5, 8], gamma=0.1, epochs=10,
                         batch_size=128, crop_padding=0, flip=True, rotate_degrees=0.0, zoom=0.0),
    ),
    Preset(
        name="modernised",
        title="modernised (BN, Adam, augmentation)",
        description="The 227x227 network with batch norm instead of LRN, Adam 1e-4, reduce-on-plateau and early "
                    "stopping, flips + rotations of 36 degrees + zoom 0.1, as the '95.7%' report (its own notebook "
                    "printed 90.6%, validating on the test set); up to 100 epochs, a GPU job.",
        source="metanthropics/revisiting-alexnet on GitHub, the 'Revisiting AlexNet' report and notebook",
        base=TrainConfig(variant="paper", norm="bn", init="lsuv", optimizer="adam", lr=1e-4, weight_decay=5e-4,
                         schedule="plateau", plateau_factor=0.2, plateau_patience=5, min_lr=1e-6,
                         early_stopping=10, epochs=100, batch_size=128, crop_padding=0, flip=True,
                         rotate_degrees=36.0, zoom=0.1),
    ),
    Preset(
        name="fast-cpu-demo",
        title="fast CPU demo (cifar variant)",
        description="The 32x32-native variant with batch norm, SGD 0.05 one-cycle, batch 64, dropout 0.25, "
                    "crops + flips, 10 epochs: "
                    "trains on whatever dataset is in use (the embedded sample included) and plots a point every "
                    "2 steps, so the curves start moving within a minute on a CPU.",
        source="this project: 55% test accuracy on the CIFAR-10 mini subset (5,085 training images) after 60 s "
               "of training (epoch 9: 56.8%) on a 2-core CPU (bench/time_to_accuracy.py, LSUV init)",
        base=TrainConfig(variant="cifar", norm="bn", init="lsuv", optimizer="sgd", lr=0.05, momentum=0.9,
                         weight_decay=5e-4, schedule="onecycle", epochs=10, batch_size=64, dropout=0.25,
                         crop_padding=4, flip=True, rotate_degrees=0.0, zoom=0.0, log_every=2),
    ),
    Preset(
        name="imagenet-finetune",
        title="ImageNet AlexNet, fine-tuned",
        description="torchvision's ImageNet AlexNet with a new 10-class last layer: CIFAR images upsampled to "
                    "224x224 and normalised with ImageNet's mean and std, SGD 0.01 one-cycle for the classifier and "
                    "a tenth of it for the conv layers (or freeze them), crops + flips, 3 epochs. Needs the ImageNet "
                    "weights (233 MB, torch's hub cache or a file you name); 57 M parameters at 224x224: a GPU job, "
                    "or a long wait on a CPU (bench/finetune_speed.py measures yours).",
        source="torchvision's AlexNet_Weights.IMAGENET1K_V1 and the usual fine-tuning recipe (new head, lower rate "
               "for pretrained layers); no published CIFAR-10 figure is reproduced",
        base=TrainConfig(variant="imagenet", norm="none", init="lsuv", optimizer="sgd", lr=0.01, momentum=0.9,
                         weight_decay=5e-4, schedule="onecycle", epochs=3, batch_size=64, dropout=0.5,
                         crop_padding=4, flip=True, rotate_degrees=0.0, zoom=0.0, freeze_features=False,
                         features_lr_scale=0.1, log_every=2),
    ),
)}

DEFAULT = "fast-cpu-demo"


def names() -> list[str]:
    return list(PRESETS)


def get(name: str) -> Preset:
    """The preset called `name` (its key or its title), or a ValueError listing the choices."""
    for preset in PRESETS.values():
        if name in (preset.name, preset.title):
            return preset
    raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
