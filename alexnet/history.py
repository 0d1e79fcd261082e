"""What AlexNet reimplementations on CIFAR-10 report, beside what this project's own runs measure.

The published figures are facts read from the sources each record names (repositories,
notebooks, reports), each with the dataset and hardware it came from and the caveat that
changes how far it can be trusted; they are not results of this code. The project's own figures come only from finished
runs' result.json, labelled with the dataset and device each was measured on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .models import VARIANTS
from .norms import NORM_SHORT_LABELS
from .runs import Run

__all__ = ["PAPER", "Reported", "PUBLISHED", "LRN_STUDIES", "own_best", "replication_rows"]

PAPER = {
    "title": "ImageNet Classification with Deep Convolutional Neural Networks",
    "authors": "Alex Krizhevsky, Ilya Sutskever, Geoffrey E. Hinton",
    "venue": "NIPS 2012",
    "top5_error": 0.153,            # ILSVRC-2012 test set, the winning entry
    "runner_up_top5_error": 0.262,
    "parameters": "60 million",
    "hardware": "two NVIDIA GTX 580 GPUs (3 GB each)",
}


@dataclass(frozen=True)
class Reported:
    source: str                 # who, and where
    network: str                # the network and recipe, in one line
    input: str                  # input size the network sees
    norm: str
    accuracy: float | None      # CIFAR-10 accuracy as a fraction: the figure the source's own output shows
    reported_as: str            # the claim in the source's words
    measured_on: str            # the dataset and split the figure comes from
    hardware: str
    seconds_per_epoch: str
    caveat: str


PUBLISHED: tuple[Reported, ...] = (
    Reported("Krizhevsky, cuda-convnet (2011)", "his own CIFAR-10 network in cuda-convnet, the code AlexNet was "
             "later trained with (a smaller net, with LRN; not AlexNet itself)", "not stated", "LRN", 0.89, "11% error in 75 minutes (translations + "
             "reflections); 18% without augmentation", "CIFAR-10 test set (full)", "one GPU of 2011",
             "- (75 min in all)", "the reference point AlexNet grew from"),
    Reported("gregorycotton/alexnet (faithful PyTorch)", "227x227, LRN, grouped convs; SGD 0.01, steps at 5 and 8, "
             "10 epochs", "227x227", "LRN", 0.7656, "76.56% best validation accuracy", "CIFAR-10 test set (full), "
             "used as the validation set", "Apple M1 Max (MPS)", "760.33", "the best of 10 epochs picked on the "
             "test set: optimistic; its LRN is 5x weaker than the paper's (torch divides alpha by n)"),
    Reported("karan-saj, Keras educational notebook", "32x32, 3x3 convs, no norm, no augmentation; Adam, 10 epochs",
             "32x32", "none", 0.7440, "74.40% test (README: around 70-80%)", "CIFAR-10 test set (full)",
             "not stated", "242 to 517", ""),
    Reported("metanthropics, 'Revisiting AlexNet'", "224x224, BN after conv1/conv2; Adam 1e-4, flips, rotations, "
             "zoom, early stopping; 88 epochs", "224x224", "BN", 0.9057, "95.7% in the report and README; the "
             "notebook's own output says 90.57%", "CIFAR-10 test set (full), used as the validation set",
             "2x Tesla T4", "about 220", "the claimed 95.7% is not what its notebook printed; early stopping and the "
             "learning-rate schedule watched the test set"),
)

# Two student studies of LRN against no norm on CIFAR-10 at 224x224, 10 epochs: (LRN, no norm) test accuracy in
# each. LRN changes little.
LRN_STUDIES = ((0.7847, 0.7905), (0.8100, 0.8101))


def own_best(runs: Iterable[Run]) -> list[Run]:
    """The finished run with the best test accuracy for each (variant, norm), best first."""
    best: dict[tuple[str, str], Run] = {}
    for run in runs:
        acc = (run.result or {}).get("test_accuracy")
        if run.state != "finished" or acc is None:
            continue
        key = (run.config.get("variant", "?"), run.config.get("norm", "?"))
        if key not in best or acc > best[key].result["test_accuracy"]:
            best[key] = run
    return sorted(best.values(), key=lambda r: r.result["test_accuracy"], reverse=True)


def _own_row(run: Run) -> dict[str, Any]:
    c, r = run.config, run.result or {}
    full = r.get("dataset_kind") == "cifar10"
    variant = VARIANTS.get(c.get("variant"))
    size = f"{variant.input_size}x{variant.input_size}" if variant else "?"
    caveat = "test set used once, after training (a validation split is held out)"
    if c.get("variant") == "imagenet":
        caveat = "pretrained on ImageNet, then fine-tuned: not trained from scratch like the others; " + caveat
    if not full:
        caveat = "not the full CIFAR-10: a smaller test set, so not comparable on equal terms; " + caveat
    epochs = r.get("epochs_run", c.get("epochs"))
    return {
        "source": f"this project: run {run.name}",
        "accuracy": r.get("test_accuracy"),
        "measured on": r.get("dataset", "?") + (" test set" if full else ""),
        "caveat": caveat,
        "hardware": r.get("device", "?"),
        "as reported": f"{r.get('test_accuracy', 0):.2%} test ({r.get('test_images', 0):,} images)",
        "network and recipe": f"{c.get('variant')} variant, {c.get('norm')}; {c.get('optimizer')} {c.get('lr'):g}, "
                              f"{c.get('schedule')}, {epochs} epochs",
        "input": size, "norm": NORM_SHORT_LABELS.get(c.get("norm"), c.get("norm")),
        "s / epoch": f"{r['seconds_per_epoch']:.1f}" if r.get("seconds_per_epoch") else "",
        "full CIFAR-10": full,
    }


def replication_rows(runs: Iterable[Run]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(published rows, this project's rows: the best finished run per variant and norm).

    Both with the same columns, in reading order: who, the accuracy, what it was measured on and the caveat
    that qualifies it, then the details.
    """
    published = [{
        "source": p.source, "accuracy": p.accuracy, "measured on": p.measured_on, "caveat": p.caveat,
        "hardware": p.hardware, "as reported": p.reported_as, "network and recipe": p.network, "input": p.input,
        "norm": p.norm, "s / epoch": p.seconds_per_epoch, "full CIFAR-10": True,
    } for p in PUBLISHED]
    return published, [_own_row(r) for r in own_best(runs)]
