"""Every knob of a training run in one dataclass; `asdict(config)` goes into each run record and checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from .initialization import INITS
from .models import VARIANTS
from .norms import NORMS

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "plateau", "onecycle")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def device_choices() -> list[str]:
    """The values of `TrainConfig.device` this machine can run: auto, cpu, its CUDA GPUs (each by number when
    there are several), Apple's MPS."""
    gpus = gpu_count()
    choices = ["auto", "cpu"]
    if gpus:
        choices += ["cuda"] + ([f"cuda:{i}" for i in range(gpus)] if gpus > 1 else [])
    if mps_available():
        choices.append("mps")
    return choices


@dataclass
class TrainConfig:
    # model
    variant: str = "cifar"          # a name in models.VARIANTS
    norm: str = "bn"                # lrn | bn | none, after the ReLU of conv1 and conv2
    init: str = "lsuv"              # lsuv (He-normal, each layer calibrated to unit scale) | kaiming | paper | torch
    dropout: float = 0.5            # probability, before fc6 and fc7 as in the paper
    pretrained_path: str | None = None  # imagenet variant: its ImageNet weights file; None = torch's hub cache
    freeze_features: bool = False   # keep the conv layers fixed (the pretrained ones): train the classifier only
    features_lr_scale: float = 1.0  # the conv layers' learning rate as a fraction of lr (fine-tuning: about 0.1)
    # data
    data_dir: str | None = None     # folder with cifar-10-batches-py; None = resolve (env, usual places, sample)
    val_fraction: float = 0.1       # share of the training images held out for validation, split with `seed`
    max_train_images: int = 0       # 0 = all; a cap for quick experiments
    crop_padding: int = 4           # pixels of padding before a random crop; 0 = off
    flip: bool = True               # random horizontal flips
    rotate_degrees: float = 0.0     # random rotation +-degrees (the 95.7% report: about 36)
    zoom: float = 0.0               # random zoom 1 +- zoom (the 95.7% report: 0.1)
    # optimisation
    optimizer: str = "sgd"          # sgd (momentum) | adam | adamw
    lr: float = 0.05                # peak learning rate
    momentum: float = 0.9           # SGD momentum (one-cycle cycles it 0.95 -> 0.85 instead; Adam keeps its betas)
    weight_decay: float = 5e-4      # L2 penalty (decoupled for adamw)
    batch_size: int = 128           # images per step
    epochs: int = 15                # passes over the training split
    schedule: str = "onecycle"      # constant | step | plateau | onecycle
    milestones: list[int] = field(default_factory=list)  # epochs at which `step` multiplies the lr by gamma
    gamma: float = 0.1              # factor of the step schedule
    plateau_factor: float = 0.2     # reduce-on-plateau factor (on validation loss)
    plateau_patience: int = 5       # epochs without improvement before reducing
    min_lr: float = 1e-6            # floor of reduce-on-plateau
    early_stopping: int = 0         # stop after this many epochs without a better val loss; 0 = off
    label_smoothing: float = 0.0    # cross-entropy label smoothing
    # machine
    seed: int = 0                   # data split, order, augmentation, init and dropout all follow it
    device: str = "auto"            # auto | cpu | cuda | cuda:N | mps; auto and cuda take a free GPU (see queues.py)
    processes: int = 1              # data-parallel processes under torchrun (one GPU each on cuda, gloo on cpu)
    precision: str = "auto"         # auto (bf16 where fast, else fp32) | fp32 | bf16 | fp16 (CUDA)
    channels_last: bool = True      # NHWC memory layout, faster convolutions on CPU and tensor cores
    compile: bool = False           # torch.compile the model (pays off on long GPU runs)
    threads: int = 0                # CPU threads for torch; 0 = torch's default
    log_every: int = 10             # steps between step events in metrics.jsonl

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a stored or user-given dict; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)

    def problems(self) -> list[str]:
        """Every out-of-range value, as a sentence; empty when the config can run."""
        p = []
        if self.variant not in VARIANTS:
            p.append(f"variant {self.variant!r} is unknown (choose {', '.join(VARIANTS)})")
        if self.norm not in NORMS:
            p.append(f"norm {self.norm!r} is unknown (choose {', '.join(NORMS)})")
        elif self.variant in VARIANTS and self.norm not in VARIANTS[self.variant].norms:
            p.append(f"the {self.variant} variant has no {self.norm} layers: choose norm "
                     f"{' or '.join(VARIANTS[self.variant].norms)}")
        if self.init not in INITS:
            p.append(f"init {self.init!r} is unknown (choose {', '.join(INITS)})")
        if self.optimizer not in OPTIMIZERS:
            p.append(f"optimizer {self.optimizer!r} is unknown (choose {', '.join(OPTIMIZERS)})")
        if self.schedule not in SCHEDULES:
            p.append(f"schedule {self.schedule!r} is unknown (choose {', '.join(SCHEDULES)})")
        if self.precision not in PRECISIONS:
            p.append(f"precision {self.precision!r} is unknown (choose {', '.join(PRECISIONS)})")
        checks = [
            (0 < self.lr <= 10, f"learning rate must be in (0, 10], got {self.lr}"),
            (1 <= self.batch_size <= 8192, f"batch size must be 1 to 8192, got {self.batch_size}"),
            (1 <= self.epochs <= 1000, f"epochs must be 1 to 1000, got {self.epochs}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (0 < self.features_lr_scale <= 1, f"the conv layers' learning-rate scale must be in (0, 1], got "
                                              f"{self.features_lr_scale}"),
            (not self.pretrained_path or self.variant == "imagenet",
             "pretrained weights are for the imagenet variant only"),
            (0 <= self.weight_decay <= 1, f"weight decay must be in [0, 1], got {self.weight_decay}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (0 <= self.val_fraction < 0.9, f"validation fraction must be in [0, 0.9), got {self.val_fraction}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.crop_padding <= 16, f"crop padding must be 0 to 16 pixels, got {self.crop_padding}"),
            (0 <= self.rotate_degrees <= 180, f"rotation must be 0 to 180 degrees, got {self.rotate_degrees}"),
            (0 <= self.zoom < 1, f"zoom must be in [0, 1), got {self.zoom}"),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
            (0 < self.plateau_factor < 1, f"plateau factor must be in (0, 1), got {self.plateau_factor}"),
            (self.plateau_patience >= 0 and self.early_stopping >= 0, "patience values must not be negative"),
            (self.max_train_images >= 0, f"max_train_images must not be negative, got {self.max_train_images}"),
            (self.log_every >= 1, f"log_every must be at least 1, got {self.log_every}"),
            (0 <= self.threads <= 1024, f"threads must be 0 to 1024, got {self.threads}"),
            (1 <= self.processes <= 1024, f"processes must be 1 to 1024, got {self.processes}"),
            (self.processes == 1 or self.device in ("auto", "cuda", "cpu"),
             f"a data-parallel run takes whole GPUs (device auto or cuda) or the CPU, not {self.device!r}"),
            (all(0 < m <= self.epochs for m in self.milestones), f"milestones must lie in 1..epochs, got {self.milestones}"),
            (self.schedule != "step" or bool(self.milestones), "the step schedule needs milestones (e.g. 5,8)"),
            (self.early_stopping == 0 or self.val_fraction > 0, "early stopping needs a validation split"),
            (self.schedule != "plateau" or self.val_fraction > 0, "reduce-on-plateau needs a validation split"),
        ]
        p += [message for ok, message in checks if not ok]
        return p

    def validate(self) -> "TrainConfig":
        problems = self.problems()
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))
        return self


def with_variant(config: TrainConfig, variant: str) -> TrainConfig:
    """`config` for another variant; an SGD rate left at the old variant's default becomes the new variant's.

    A rate does not carry across widths: SGD's step on a layer's output grows with the width of the layer's
    input, and the paper variant's classifier (9216 -> 4096 -> 4096) is eight times wider than the cifar
    variant's (2304 -> 512 -> 512). In the recipe check (tests/test_recipes_learn.py) the paper build with BN
    diverged at the cifar variant's 0.05 and learned at 0.02. A rate someone chose is theirs and stays.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose {', '.join(VARIANTS)}")
    values = {"variant": variant}
    if config.optimizer == "sgd" and config.variant in VARIANTS and config.lr == VARIANTS[config.variant].sgd_lr:
        values["lr"] = VARIANTS[variant].sgd_lr
    return replace(config, **values)
