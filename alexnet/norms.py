"""The norm layer every variant takes after the ReLU of conv1 and conv2, and its names for people.

Torch-free, so a module that only names norms (the charts) need not load torch; `models` builds the layers.
"""
from __future__ import annotations

__all__ = ["NORMS", "NORM_LABELS", "NORM_SHORT_LABELS"]

NORMS = ("lrn", "bn", "none")
NORM_LABELS = {"lrn": "LRN (paper)", "bn": "batch norm", "none": "none"}   # where a norm is picked
NORM_SHORT_LABELS = {"lrn": "LRN", "bn": "BN", "none": "none"}             # in tables, legends and verdicts
