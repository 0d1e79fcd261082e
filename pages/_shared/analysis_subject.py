"""What the Evaluate page's views share: which model is analysed on which test set, and background analysis.

The models are the demo and every finished run (its record holds the test-set answers); a run is
analysed on the test set it was tested on, the demo on the dataset in use. Heavy work runs in a
background process (`alexnet.analysis_jobs`); `task_ready` shows its progress and says when its
result, kept in the model's analysis folder, can be read.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from torch import nn

from alexnet import analysis, analysis_jobs, predict
from alexnet import data as datasets
from alexnet import runs as run_records
from pages._shared.dataset import current_source, load_dataset
from pages._shared.model_picker import CURRENT_MODEL, listed_model
from pages._shared.test_set_view import test_set_for


@dataclass(frozen=True)
class Chosen:
    """The model picked on the Evaluate page, and what it is analysed on."""
    choice: predict.ModelChoice
    subject: analysis.Subject
    data: datasets.Cifar10          # shared by all sessions: never change it
    model: nn.Module                # shared by all sessions: never change it
    result: dict | None             # a run's result.json; None for the demo

    def key(self, task: analysis_jobs.Task) -> str:
        """Names the kept result of `task` for these weights and this test set, in the app's caches."""
        path = task.result(self.subject)
        stamp = path.stat().st_mtime_ns if path.exists() else 0
        return f"{path}|{stamp}|{self.subject.weights.stat().st_mtime_ns}"


def evaluable_models() -> list[predict.ModelChoice]:
    """The demo and the finished runs (stopped runs have no test-set answers yet)."""
    return [c for c in predict.available_models(run_records.runs_root())
            if c.kind == "demo" or (c.path.parent / "result.json").is_file()]


@st.cache_data(show_spinner=False, max_entries=32)
def _subject(weights: str, modified: float, source: datasets.DatasetSource, root: str) -> analysis.Subject:
    return analysis.subject(weights, source, root)   # `modified` keys the cache: the demo's folder is its hash


def _test_set(choice: predict.ModelChoice) -> tuple[datasets.Cifar10 | None, str | None]:
    """The test set to analyse on: a run's own (checked against its record), the dataset in use for the demo;
    or why there is none."""
    if choice.kind == "run":
        return test_set_for(run_records.load_run(choice.path.parent, with_metrics=False))
    source = current_source()
    if source is None:
        return None, "no dataset is available (see the sidebar's dataset folder)"
    return load_dataset(source), None


def pick(key: str) -> Chosen | None:
    """A selectbox over the demo and the finished runs (the model of the other pages first); None after saying
    why nothing can be analysed."""
    choices = evaluable_models()
    if not choices:
        st.info("No model to evaluate: the demo model is missing and no run has finished.")
        return None
    labels = [c.label for c in choices]
    remembered = st.session_state.get(CURRENT_MODEL)
    picked = st.selectbox("Model", labels, index=labels.index(remembered) if remembered in labels else 0, key=key,
                          help="The demo model ships with the app; your runs appear here once they have finished.")
    choice = choices[labels.index(picked)]
    data, problem = _test_set(choice)
    if data is None:
        st.warning(f"**{choice.label}** cannot be evaluated: {problem}")
        return None
    loaded = listed_model(choice)
    if loaded is None:
        return None
    source = data.source
    subject = _subject(str(choice.path), choice.path.stat().st_mtime, source, str(run_records.runs_root()))
    result = run_records.read_json(choice.path.parent / "result.json") if choice.kind == "run" else None
    st.caption(f"{choice.variant} variant, norm {choice.norm}; {choice.detail.rstrip('.')}. Test set: {source.label}, "
               f"{source.test_count:,} images. What is computed here is kept in `{subject.folder}`.")
    return Chosen(choice, subject, data, loaded.model, result)


def task_ready(chosen: Chosen, task: analysis_jobs.Task, what: str, automatic: bool = True,
               button: str | None = None) -> bool:
    """True when `task`'s result is there for this model and test set. Otherwise starts it in the background
    (at once when `automatic`, else on a click of `button`), shows its progress, and returns False."""
    state = analysis_jobs.progress(chosen.subject, task)
    if state["state"] == "finished":
        return True
    if state["state"] == "failed":
        st.error(f"Computing {what} failed: {state['reason']}")
        automatic = False
    if state["state"] != "running":
        if not automatic and not st.button(button or f"Compute {what}", key=f"start_{task.name}",
                                           icon=":material/play_arrow:"):
            return False
        try:
            analysis_jobs.start(chosen.subject, task, run_records.runs_root())
        except OSError as err:   # the runs folder cannot be written
            st.error(f"Computing {what} cannot start: {err}")
            return False
    _progress(chosen.subject, task, what)
    return False


@st.fragment(run_every="1s")
def _progress(subject: analysis.Subject, task: analysis_jobs.Task, what: str) -> None:
    """The progress bar of a running task; when it ends, the whole page reruns to show the result."""
    state = analysis_jobs.progress(subject, task)
    if state["state"] == "running":
        st.progress(state["fraction"], text=f"Computing {what} in the background: {state['fraction']:.0%}")
        return
    st.rerun(scope="app")
