"""The dataset the app uses: the sidebar's folder setting, else what `alexnet.data.resolve_dataset` finds.

Every page asks `dataset_in_use()`, so the sidebar, the forms and the galleries name the same
dataset. Cached objects are shared by every session of the server: never change one in place.
"""
from __future__ import annotations

import os

import streamlit as st

from alexnet import data as datasets

DATA_KEY = "data_dir"  # the sidebar's "Dataset folder" text box


def data_dir() -> str | None:
    """The dataset folder named in the app's setting, else None (environment, usual places, sample)."""
    return st.session_state.get(DATA_KEY) or None


def dataset_in_use(folder: str | None = None) -> datasets.DatasetSource | str:
    """The dataset in `folder` when one is named (a run's own), else in the sidebar's folder, else what
    `resolve_dataset` finds ($ALEXNET_DATA, the usual places, the sample); or the message that says why
    there is none."""
    return _resolved(folder or data_dir(), os.environ.get(datasets.ENV_VAR))


@st.cache_data(ttl=30, show_spinner=False)
def _resolved(named: str | None, environment: str | None) -> datasets.DatasetSource | str:
    """`environment` only keys the cache (`resolve_dataset` reads $ALEXNET_DATA itself): a changed
    variable is not answered from the old one's entry."""
    try:
        return datasets.resolve_dataset(named)
    except datasets.DatasetMissing as err:
        return str(err)


def forget_resolved() -> None:
    """The next look resolves again (a download has just put CIFAR-10 in a usual place)."""
    _resolved.clear()


def current_source() -> datasets.DatasetSource | None:
    source = dataset_in_use()
    return source if isinstance(source, datasets.DatasetSource) else None


def job_data_dir(source: datasets.DatasetSource | str) -> str | None:
    """The folder a training process is told to read: the one the sidebar shows, so the job trains on it
    whatever its own environment; for the sample, the named setting (a job finds the sample itself)."""
    if isinstance(source, datasets.DatasetSource) and source.kind != "sample":
        return str(source.path)
    return data_dir()


@st.cache_resource(show_spinner="Reading the dataset...", max_entries=2)
def load_dataset(source: datasets.DatasetSource) -> datasets.Cifar10:
    return datasets.load_cifar10(source)
