"""A model's test-set evaluation: the confusion matrix, per-class precision and recall, its most confident mistakes.

For a finished run everything but the mistakes' confidence comes from its record: the confusion
matrix and each test image's predicted class in `result.json`. How sure the model was of each
answer is not recorded there, so `test_probabilities` computes every test image's class
probabilities once (fp32, the app's one preprocessing path, `predict.probabilities`) and keeps
them in the run's `analysis/` folder (`analysis.py`); the run's recorded answers stay the ones
shown, and the confidence of a mistake is the probability the model gives the class it answered.
(A run tested in bf16 can differ from that fp32 pass on a few images near a tie; `agreement` says
on how many the two answer alike.) For a model without a run (the demo), the same pass gives the
answers too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import analysis
from .data import Cifar10
from .predict import probabilities

PROBABILITIES = "test-probabilities.safetensors"
ProgressHandler = Callable[[int, int], None]   # (images done, images in all)


@dataclass(frozen=True)
class Mistake:
    index: int            # in the test set
    true: int
    predicted: int
    confidence: float     # the probability the model gave the class it answered


@dataclass(frozen=True)
class Evaluation:
    """Counts and answers over one test set; `confidence` (of each answer) once the probabilities are known."""
    classes: tuple[str, ...]
    counts: np.ndarray              # classes x classes, rows the true class, columns the answer
    labels: np.ndarray              # each test image's true class
    predictions: np.ndarray         # each test image's answer
    confidence: np.ndarray | None   # each answer's probability; None until computed
    recorded: bool                  # answers from a run's record (True) or from the probabilities (False)
    agreement: int | None = None    # recorded answers that the probabilities' argmax repeats

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.counts) / max(self.counts.sum(), 1))

    @property
    def row_shares(self) -> np.ndarray:
        """Each true class's row as shares of its images (rows sum to 1; an empty row stays 0)."""
        return self.counts / np.maximum(self.counts.sum(axis=1, keepdims=True), 1)

    @property
    def recall(self) -> list[float | None]:
        """Per class: the share of its images answered right (the run record's per-class accuracy);
        None for a class with no test image."""
        return _ratios(np.diag(self.counts), self.counts.sum(axis=1))

    @property
    def precision(self) -> list[float | None]:
        """Per class: the share of the answers naming it that are right; None (undefined, not 0/0) for a
        class never answered."""
        return _ratios(np.diag(self.counts), self.counts.sum(axis=0))

    def mistakes(self, true: int | None = None, predicted: int | None = None, limit: int | None = None
                 ) -> list[Mistake]:
        """Wrong answers, most confident first (test-set order while the confidence is unknown), optionally
        only those of one true class and/or one answered class."""
        wrong = self.labels != self.predictions
        if true is not None:
            wrong &= self.labels == true
        if predicted is not None:
            wrong &= self.predictions == predicted
        indices = np.flatnonzero(wrong)
        if self.confidence is not None:
            indices = indices[np.argsort(-self.confidence[indices], kind="stable")]
        indices = indices[:limit]
        sure = self.confidence if self.confidence is not None else np.full(len(self.labels), np.nan)
        return [Mistake(int(i), int(self.labels[i]), int(self.predictions[i]), float(sure[i])) for i in indices]


def _ratios(numerators: np.ndarray, denominators: np.ndarray) -> list[float | None]:
    return [float(n / d) if d else None for n, d in zip(numerators, denominators)]


def confusion_counts(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(classes, classes)


def from_result(result: Mapping[str, Any], labels: Sequence[int], probs: np.ndarray | None = None) -> Evaluation:
    """A finished run's evaluation from its `result.json` and the true labels of the test set it was tested on
    (`compare.dataset_mismatch` says whether a loaded test set is that one)."""
    predictions = np.asarray(result["predictions"], dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(predictions) != len(labels):
        raise ValueError(f"the run answered for {len(predictions):,} test images, the test set has {len(labels):,}")
    counts = np.asarray(result.get("confusion_matrix") or
                        confusion_counts(labels, predictions, len(result["classes"])), dtype=np.int64)
    confidence = agreement = None
    if probs is not None:
        confidence = probs[np.arange(len(predictions)), predictions]
        agreement = int((probs.argmax(axis=1) == predictions).sum())
    return Evaluation(tuple(result["classes"]), counts, labels, predictions, confidence, True, agreement)


def from_probabilities(probs: np.ndarray, labels: Sequence[int], classes: Sequence[str]) -> Evaluation:
    """A model's evaluation from its probabilities on a test set (a model without a run record)."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = probs.argmax(axis=1)
    return Evaluation(tuple(classes), confusion_counts(labels, predictions, len(classes)), labels, predictions,
                      probs[np.arange(len(labels)), predictions], False)


def test_probabilities(model: nn.Module, data: Cifar10, batch_size: int = 256,
                       on_progress: ProgressHandler | None = None) -> np.ndarray:
    """Every test image's class probabilities (N x classes, float32), in batches with progress."""
    out = []
    for start in range(0, len(data.test_x), batch_size):
        out.append(probabilities(model, data.test_x[start:start + batch_size]))
        if on_progress is not None:
            on_progress(min(start + batch_size, len(data.test_x)), len(data.test_x))
    return torch.cat(out).numpy() if out else np.zeros((0, len(data.classes)), dtype=np.float32)


def save_probabilities(subject: analysis.Subject, probs: np.ndarray) -> None:
    analysis.save_arrays(subject.path(PROBABILITIES), {"probabilities": probs.astype(np.float32)}, {}, subject)


def load_probabilities(subject: analysis.Subject) -> np.ndarray | None:
    """The cached probabilities of this subject's test set, or None when missing or stale."""
    found = analysis.load_arrays(subject.path(PROBABILITIES), subject)
    return None if found is None else found[0]["probabilities"]
