"""torch.compile in the training loop: it compiles and trains on this CPU, and a compilation that fails does not
end the run: it goes on in eager mode with the same numbers, the reason in its log and in its record.

A broken compiler is made through torch's public route to one: a `torch.compile` backend (a callable that
receives the traced graph), here one that raises as a failing compiler does, handed to the loop's own
`torch.compile` call.
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from streamlit.testing.v1 import AppTest

from alexnet.config import TrainConfig
from alexnet.data import Cifar10
from alexnet.runs import RunWriter, load_run, read_metrics
from alexnet.train import end_epoch, finish, start_session, train, train_one_epoch

TINY = dict(max_train_images=128, batch_size=32, epochs=2, val_fraction=0.1, log_every=1, threads=1)


@pytest.fixture(autouse=True)
def fresh_compiler():
    """No compiled code carried from one test into the next (the runs' `threads=1` is undone by conftest)."""
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def small(mini_data, train: int = 300, test: int = 100) -> Cifar10:
    """The first images of the real subset: 300 to split into training (capped at 128) and validation, 100 to test."""
    return Cifar10(mini_data.train_x[:train], mini_data.train_y[:train], mini_data.test_x[:test],
                   mini_data.test_y[:test], mini_data.classes, mini_data.source)


def broken_compiler(monkeypatch, fails_when, after_running: bool = False) -> None:
    """The loop's torch.compile gets a backend that raises when `fails_when()` holds while it compiles a graph.

    after_running: the compiled graph itself fails, after it has run (dropout drawn, BN statistics moved), as a
    kernel can; otherwise compiling fails before anything runs, as a compiler error does.
    """
    real_compile = torch.compile

    def backend(graph: torch.fx.GraphModule, example_inputs):
        if not fails_when():
            return graph.forward
        if not after_running:
            raise RuntimeError("this compiler is broken")

        def run_then_fail(*args):
            graph.forward(*args)
            raise RuntimeError("this compiler is broken")
        return run_then_fail

    monkeypatch.setattr(torch, "compile", lambda model, **options: real_compile(model, backend=backend))


def without_timing(events: list[dict]) -> list[dict]:
    """The record's numbers: every event but the start, a stop and a compile failure, timings left out."""
    timing, kinds = {"images_per_s", "time", "epoch_seconds", "wall"}, ("start", "stopped", "compile_failed")
    return [{k: v for k, v in e.items() if k not in timing} for e in events if e["event"] not in kinds]


def train_twice(tmp_path, data, monkeypatch, fails_when, after_running=False):
    """The same seed trained eagerly, then with compile and the broken compiler; returns both run folders."""
    eager = RunWriter.create(tmp_path, "eager", TrainConfig(**TINY).to_dict()).path
    train(TrainConfig(**TINY), eager, data=data)
    broken_compiler(monkeypatch, fails_when, after_running)
    config = TrainConfig(**TINY, compile=True)
    compiled = RunWriter.create(tmp_path, "compiled", config.to_dict()).path
    train(config, compiled, data=data)
    return eager, compiled


def assert_same_numbers(eager, compiled) -> None:
    a, b = load_file(str(eager / "weights.safetensors")), load_file(str(compiled / "weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a), "the run did not go on as an eager run of the same seed"
    assert without_timing(read_metrics(eager / "metrics.jsonl")) == \
        without_timing(read_metrics(compiled / "metrics.jsonl"))
    assert load_run(eager).result["predictions"] == load_run(compiled).result["predictions"]


@pytest.mark.parametrize("after_running", [False, True], ids=["compiling fails", "the compiled step fails"])
def test_a_failed_compilation_goes_on_in_eager_mode_with_the_numbers_of_an_eager_run(
        after_running, mini_data, tmp_path, monkeypatch, capsys):
    eager, compiled = train_twice(tmp_path, small(mini_data), monkeypatch, lambda: True, after_running)
    run = load_run(compiled)
    assert run.state == "finished"
    failures = [e for e in run.metrics if e["event"] == "compile_failed"]
    assert len(failures) == 1, failures                  # after a failed step nothing is compiled again
    assert failures[0]["during"] == "training step" and failures[0]["global_step"] == 0
    assert "RuntimeError: this compiler is broken" in failures[0]["reason"]
    assert [e["event"] for e in run.metrics][:2] == ["start", "compile_failed"]
    log = capsys.readouterr().out                         # stdout: the run's log.txt when jobs start it
    assert "torch.compile failed in the training step at step 0; going on in eager mode" in log
    assert "this compiler is broken" in log
    assert_same_numbers(eager, compiled)                  # the failed attempt left no trace: not half applied


def test_an_evaluation_that_fails_to_compile_is_done_again_eagerly(mini_data, tmp_path, monkeypatch):
    """Evaluation compiles anew (no_grad, eval mode, another batch size); a failure there keeps training compiled."""
    eager, compiled = train_twice(tmp_path, small(mini_data), monkeypatch, lambda: not torch.is_grad_enabled())
    run = load_run(compiled)
    assert run.state == "finished"
    failures = [e for e in run.metrics if e["event"] == "compile_failed"]
    assert [(e["during"], e["global_step"]) for e in failures] == [("evaluation", 4)]   # the first validation
    assert_same_numbers(eager, compiled)


def test_a_stop_and_resume_with_a_failing_compiler_still_equals_the_eager_run(mini_data, tmp_path, monkeypatch):
    data = small(mini_data)
    eager = RunWriter.create(tmp_path, "eager", TrainConfig(**TINY).to_dict()).path
    train(TrainConfig(**TINY), eager, data=data)
    broken_compiler(monkeypatch, lambda: True, after_running=True)
    config = TrainConfig(**TINY, compile=True)
    parts = RunWriter.create(tmp_path, "parts", config.to_dict()).path
    stop = threading.Event()
    train(config, parts, on_event=lambda e: e.get("global_step") == 6 and stop.set(), stop=stop, data=data)
    assert load_run(parts).state == "stopped"
    train(config, parts, resume=True, data=data)       # a new process: its first step fails to compile again
    events = read_metrics(parts / "metrics.jsonl")
    stopped_at = next(e["global_step"] for e in events if e["event"] == "stopped")
    assert [e["global_step"] for e in events if e["event"] == "compile_failed"] == [0, stopped_at]
    assert_same_numbers(eager, parts)


def test_the_train_page_says_that_a_run_went_on_without_compiling(mini_data, mini_dir, runs_dir, monkeypatch):
    broken_compiler(monkeypatch, lambda: True)
    config = TrainConfig(**TINY, compile=True)
    train(config, RunWriter.create(runs_dir, "uncompiled", config.to_dict()).path, data=small(mini_data))
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="train.run").value == "uncompiled"
    shown = [w.value for w in at.warning if "torch.compile failed" in w.value]
    assert len(shown) == 1 and "in the training step at step 0" in shown[0] and "eager mode" in shown[0]
    assert "this compiler is broken" in shown[0]


@pytest.mark.parametrize("norm", ["lrn", "bn"])
def test_compile_really_compiles_and_trains_the_cifar_variant(norm, mini_data):
    """inductor on this CPU, bf16 autocast and channels_last as the loop runs them, training and evaluation."""
    data = small(mini_data, train=220, test=22)     # 22 to validate, 22 to test: evaluation compiles for one size
    config = TrainConfig(norm=norm, max_train_images=96, batch_size=32, epochs=1, log_every=1, threads=1, dropout=0.0)
    eager_events, events = [], []
    train(config, on_event=eager_events.append, data=data)
    session = start_session(TrainConfig(**{**config.to_dict(), "compile": True}), data)
    compiled_calls = []                             # public evidence: dynamo traced the model's forward
    session.model.register_forward_pre_hook(lambda module, args: compiled_calls.append(torch.compiler.is_compiling()))
    before = session.model.features[0].weight.detach().clone()
    end_epoch(session, train_one_epoch(session, emit=events.append), events.append)
    result = finish(session, events.append)
    assert compiled_calls and all(compiled_calls), compiled_calls   # 3 steps, validation and test: all compiled
    assert not [e for e in events if e["event"] == "compile_failed"]
    assert session.forward is not session.eager_forward and session.evaluator is not session.model
    assert not torch.equal(before, session.model.features[0].weight)
    steps, eager_steps = [e for e in events if e["event"] == "step"], [e for e in eager_events if e["event"] == "step"]
    assert [e["global_step"] for e in steps] == [1, 2, 3]
    # The first loss is the untrained model's: compiled and eager agree to bf16's precision.
    assert steps[0]["loss"] == pytest.approx(eager_steps[0]["loss"], rel=2e-2)
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in steps) and result["test_images"] == 22
