"""The Train page's "Find a learning rate": a range test of the form's config (`alexnet.lr_search`), run in a
background process like a training run, kept per config, drawn as loss against rate with its suggestion, which a
button fills into the form's learning-rate field."""
from __future__ import annotations

import streamlit as st

from alexnet import charts, lr_finder, lr_search
from alexnet import runs as run_records
from alexnet.config import TrainConfig
from alexnet.lr_finder import RangeTestSettings
from alexnet.norms import NORM_LABELS
from alexnet.runs import ACTIVE_STATES
from pages._shared.train_settings import form_config, key

PERSIST = dict(persist_state="session")  # the panel survives a visit to another page
POLL_SECONDS = 1.0


def finder_settings() -> RangeTestSettings:
    return RangeTestSettings(steps=int(st.session_state.get("train.lr_steps", RangeTestSettings.steps)))


def start_lr_find() -> None:
    """Button callback: the form's range test in a background process (nothing if it has run or is running)."""
    config, problems = form_config()
    if problems:
        st.session_state["train.notice"] = ("error", "No range test: " + "; ".join(problems))
        return
    try:
        lr_search.start(run_records.runs_root(), config, finder_settings())
    except (ValueError, OSError) as err:
        st.session_state["train.notice"] = ("error", f"No range test: {err}")


def use_rate(rate: float) -> None:
    """Button callback: the suggestion into the form's learning-rate field, and the whole page redrawn (the button
    lies in the finder's fragment, the field outside it)."""
    st.session_state[key("lr")] = float(f"{rate:.3g}")
    st.rerun()


def lr_finder_panel() -> None:
    """'Find a learning rate' under the form's fields: the test's budget, its button, and what it found."""
    if not st.toggle("Find a learning rate", key="train.lr_finder", **PERSIST,
                     help="A learning-rate range test of these settings, as Smith (2017) and fastai's lr_find."):
        return
    st.session_state.setdefault("train.lr_steps", RangeTestSettings.steps)
    config, problems = form_config()
    with st.container(border=True):
        settings = finder_settings()
        a, b = st.columns([1, 3], vertical_alignment="bottom")
        a.number_input("Steps", min_value=5, max_value=10_000, step=10, key="train.lr_steps", **PERSIST,
                       help="The test's budget: training steps, one batch each.")
        b.button("Find a learning rate", key="train.lr_find_start", on_click=start_lr_find, disabled=bool(problems),
                 icon=":material/query_stats:")
        st.caption(f"Trains these settings for {settings.steps} steps on the training split while the rate rises from "
                   f"{settings.start:g} to {settings.end:g} (constant within a step, no schedule), stops once the "
                   f"smoothed loss passes {settings.divergence:g}x its minimum, and suggests "
                   f"{lr_finder.RULE_TEXT}, as a peak rate. It runs in the background, waits for its device like a "
                   "run, and is kept: the same settings again show at once.")
        state = "none" if problems else lr_search.status(run_records.runs_root(), config, settings)["state"]
        active = state in ACTIVE_STATES
        st.fragment(lr_finder_view, run_every=POLL_SECONDS if active else None)(config, settings, active)


def lr_finder_view(config: TrainConfig, settings: RangeTestSettings, active_when_drawn: bool) -> None:
    """The form's range test: its progress while it runs, then loss against rate and the suggestion to use."""
    status = lr_search.status(run_records.runs_root(), config, settings)
    if (status["state"] in ACTIVE_STATES) != active_when_drawn:
        st.rerun()  # it started or ended: redraw the page, polling only while it runs
    if status["state"] == "running":
        st.progress(min(status["step"] / status["steps"], 1.0),
                    text=f"range test: step {status['step']} of {status['steps']}"
                         + (f" · rate {status['rate']:.3g} · smoothed loss {status['loss']:.3f}"
                            if status.get("rate") else ""))
    elif status["state"] == "queued":
        st.progress(0.0, text=f"range test queued: {status.get('reason', '')}")
    elif status["state"] in ("failed", "stopped"):
        st.error(f"The range test {status['state']}: {status.get('reason') or 'no reason recorded'}")
    elif status["state"] == "finished":
        draw_result(config, status["result"])


def draw_result(config: TrainConfig, result: lr_finder.RangeTest) -> None:
    label = f"{config.variant}, {NORM_LABELS[config.norm]}"
    st.plotly_chart(charts.range_test_figure({label: result.to_dict()}, height=320), key="train.lr_chart",
                    config=charts.png_config("range-test"))
    st.caption(f"On {result.dataset}, {result.device}: {result.summary()}.")
    if result.suggestion:
        st.button(f"Use {result.suggestion:.3g} as the learning rate", key="train.lr_use", type="primary",
                  on_click=use_rate, args=(result.suggestion,), icon=":material/input:")
