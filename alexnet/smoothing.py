"""The debiased exponential moving average: one definition for the curves on the pages and the range test.

Debiased as TensorBoard and fastai do it (the running mean divided by 1 - weight^n), so the first
points are not pulled towards 0. No torch, no plotly: a training process and a chart both import it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["DebiasedAverage", "smooth"]


class DebiasedAverage:
    """The average fed one value at a time (a range test stops on it as the values arrive)."""

    def __init__(self, weight: float) -> None:
        if not 0 <= weight < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {weight}")
        self.weight, self._sum, self._count = weight, 0.0, 0

    def add(self, value: float) -> float:
        """The average after `value`; a non-finite value passes through and leaves the average as it was."""
        if not math.isfinite(value):
            return value
        self._sum = self._sum * self.weight + (1 - self.weight) * value
        self._count += 1
        return self._sum / (1 - self.weight ** self._count)


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """Every value's debiased average. `weight` in [0, 1): 0 returns the values unchanged."""
    average = DebiasedAverage(weight)
    return [average.add(v) for v in values]
