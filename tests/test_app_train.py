"""The Train page through Streamlit's AppTest, and the presets, charts and CLI flag it stands on.

Real runs only: a finished run is trained in-process on a few hundred images of the CIFAR-10
mini subset; the form test starts a real training process through the page and waits for it.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from alexnet import archive, charts, jobs, presets, queues
from alexnet import runs as run_records
from alexnet.cli import build_parser, train_config
from alexnet.config import TrainConfig, device_choices
from alexnet.train import pick_device, train
from pages._shared.devices import device_options, label, to_config
from conftest import THREADS, open_app_page

APP = Path(__file__).resolve().parent.parent / "app.py"
PAGE = "pages/train.py"
TINY = dict(max_train_images=256, epochs=2, batch_size=64, threads=THREADS, log_every=2)


def open_train_page() -> AppTest:
    return open_app_page(PAGE, timeout=60)


def figures(at: AppTest) -> dict[str, dict]:
    """The page's plotly figures by their y-axis title (loss / accuracy), as the browser receives them."""
    out = {}
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        out[spec["layout"]["yaxis"]["title"]["text"].split()[0]] = spec
    return out


def frame(at: AppTest, *columns: str):
    """The page's dataframe holding all these columns (AppTest's dataframes carry no key)."""
    found = [d.value for d in at.dataframe if all(c in d.value.columns for c in columns)]
    assert found, f"no table with columns {columns}"
    return found[0]


def points(spec: dict, name: str) -> int:
    return sum(len(trace["x"]) for trace in spec["data"] if trace.get("name") == name)


def set_form(at: AppTest, **values) -> None:
    for field, value in values.items():
        at.number_input(key=f"train.{field}").set_value(value)
    at.run()


@pytest.fixture
def mini_env(monkeypatch, mini_dir, runs_dir):
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    return runs_dir


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory, mini_data) -> Path:
    """A real one-epoch run on 256 images of the mini subset, recorded as the app's jobs record it (trained once)."""
    config = TrainConfig(variant="cifar", norm="bn", epochs=1, batch_size=64, max_train_images=256, threads=THREADS,
                         log_every=1, schedule="constant", lr=0.01, data_dir=str(mini_data.source.path))
    writer = run_records.RunWriter.create(tmp_path_factory.mktemp("trained"), "tiny-finished", config.to_dict())
    train(config, writer.path, data=mini_data)
    return writer.path


@pytest.fixture
def finished_run(mini_env, trained_once):
    """A copy of that run in this test's own runs folder (a test may delete it)."""
    return run_records.load_run(shutil.copytree(trained_once, mini_env / trained_once.name))


# ---------------------------------------------------------------- the page

def test_empty_runs_folder_renders_the_form_and_says_what_to_do(mini_env):
    at = open_train_page()
    assert any("No runs yet" in i.value for i in at.info)
    assert not at.get("plotly_chart")
    assert at.selectbox(key="train.preset").value == presets.DEFAULT
    assert at.button(key="train.start").disabled is False
    assert not at.error


def test_the_device_box_offers_what_this_machine_runs(mini_env):
    at = open_train_page()
    options = device_options()  # config.device_choices, and all GPUs at once where there are several
    assert options[:len(device_choices())] == device_choices() and options[:2] == ["auto", "cpu"]
    assert at.selectbox(key="train.device").options == [label(o) for o in options]
    assert at.session_state["train.device"] == "auto"
    devices = [to_config(o)[0] for o in options]
    assert [pick_device(d).type for d in devices] == \
        [pick_device("auto").type, "cpu", *[d.split(":")[0] for d in devices[2:]]]


def test_missing_dataset_is_named_and_start_is_disabled(monkeypatch, runs_dir, tmp_path):
    monkeypatch.setenv("ALEXNET_DATA", str(tmp_path / "nowhere"))
    at = open_train_page()
    assert any("No dataset" in w.value and "python -m alexnet download" in w.value for w in at.warning)
    assert at.button(key="train.start").disabled is True
    assert any("no dataset" in e.value for e in at.error)


def test_finished_run_shows_its_curves_result_and_table_row(finished_run):
    at = open_train_page()
    result = finished_run.result
    assert any(f"test accuracy **{result['test_accuracy']:.1%}**" in s.value for s in at.success)
    figs = figures(at)
    assert set(figs) == {"loss", "accuracy", "learning"}  # the learning rate beside them
    steps, epochs = finished_run.steps(), finished_run.epochs()
    assert len(steps) == 4 and len(epochs) == 1  # 256 images / 64 a step, every step logged
    loss = figs["loss"]
    assert points(loss, "train (per step)") == len(steps)
    assert points(loss, "validation") == len(epochs)
    test_point = [t for t in loss["data"] if t["name"] == "test"][0]
    assert test_point["y"] == [pytest.approx(result["test_loss"])]
    table = at.dataframe[0].value
    row = table[table["run"] == "tiny-finished"].iloc[0]
    assert row["state"] == "finished"
    assert row["test accuracy"] == pytest.approx(100 * result["test_accuracy"])


def test_finished_run_charts_follow_the_axis_and_smoothing_controls(finished_run):
    at = open_train_page()
    at.segmented_control(key="train.x").set_value("step")
    at.slider(key="train.smoothing").set_value(0.0)
    at.run()
    loss = figures(at)["loss"]
    train_trace = [t for t in loss["data"] if t["name"] == "train (per step)"][0]
    assert train_trace["x"] == [e["global_step"] for e in finished_run.steps()]
    assert train_trace["y"] == pytest.approx([e["loss"] for e in finished_run.steps()])
    assert not any(t["name"].endswith("(raw)") for t in loss["data"])  # no faint copy without smoothing


def test_new_run_like_this_fills_the_form_with_the_runs_settings(finished_run):
    at = open_train_page()
    assert at.session_state["train.form_open"] is False  # runs exist: the form starts folded
    at.number_input(key="train.epochs").set_value(7)
    at.selectbox(key="train.norm").set_value("lrn")
    at.run()
    at.button(key="train.copy").click().run()
    assert not at.exception
    config = finished_run.config
    for field in ("epochs", "batch_size", "lr", "seed"):
        assert at.number_input(key=f"train.{field}").value == config[field], field
    assert at.session_state["train.max_train_images"] == config["max_train_images"] == 256  # an advanced field
    assert at.selectbox(key="train.norm").value == config["norm"] == "bn"
    assert at.selectbox(key="train.schedule").value == config["schedule"]
    assert at.session_state["train.form_open"] is True
    assert at.selectbox(key="train.preset").value is None                     # no preset claims these settings
    assert any("The settings of **tiny-finished**" in c.value for c in at.caption)
    assert any("settings of **tiny-finished**" in i.value for i in at.info)
    at.selectbox(key="train.preset").set_value("paper-2012").run()  # a preset replaces them, and says so
    assert not any("settings of" in i.value for i in at.info)


def test_failed_run_shows_its_reason_and_log(mini_env):
    writer = run_records.RunWriter.create(mini_env, "diverged", TrainConfig(lr=5.0).to_dict())
    reason = "the loss became nan at step 30 (epoch 1): lower the learning rate or use a norm layer"
    writer.set_status("failed", reason=reason, checkpoint=False)
    (writer.path / "log.txt").write_text("run diverged: /tmp/x\nTraceback (most recent call last):\nTrainingFailed\n")
    at = open_train_page()
    assert any(f"**failed**: {reason}" in e.value for e in at.error)
    assert any("TrainingFailed" in c.value for c in at.code)
    assert at.button(key="train.resume").disabled is True  # nothing to resume from
    assert at.button(key="train.delete").disabled is False
    assert at.dataframe[0].value.set_index("run").loc["diverged", "message"] == reason


def test_running_run_shows_its_place_speed_time_left_and_rate(mini_env, trained_once):
    """The progress bar of a run in progress (run_progress), on the trainer's own events renumbered.

    The start and step events are a real run's (trained_once), so they have the fields the trainer
    writes; only the numbers change: 3,000 training images in 50 steps an epoch (60 images a step,
    not the batch size of 64), 4 epochs, the last step logged at 60 of 200. The speed is the mean
    of the last five logged steps (the first, far faster one is left out): 128 images/s, so
    140 steps x 60 images / 128 = 65.6 s left. The status names this test's own process, so the
    run reads as running.
    """
    real = run_records.load_run(trained_once)
    start = next(e for e in real.metrics if e["event"] == "start")
    step = real.steps()[-1]
    writer = run_records.RunWriter.create(mini_env, "live", {**real.config, "epochs": 4})
    writer.set_status("running", epoch=1, checkpoint=True, device=start["device"], dataset=start["dataset"])
    writer.log({**start, "global_step": 0, "epoch": 0, "train_images": 3000, "steps_per_epoch": 50, "epochs": 4})
    for n, (speed, lr) in enumerate([(10_000.0, 0.1), (100.0, 0.08), (120.0, 0.06), (140.0, 0.04), (130.0, 0.02),
                                     (150.0, 0.0123)], start=1):
        writer.log({**step, "global_step": 10 * n, "epoch": 10 * n / 50, "images_per_s": speed, "lr": lr})
    writer.close()
    assert run_records.load_run(writer.path).state == "running"

    at = open_train_page()
    assert at.selectbox(key="train.run").value == "live"
    (bar,) = [p.proto for p in at.get("progress")]
    assert bar.value == 30  # 60 of 200 steps
    assert bar.text == "epoch 1.20 / 4 · step 60 / 200 · 128 images/s · about 1 min 06 s left"
    assert [m.value for m in at.metric if m.label == "Learning rate"] == ["0.0123"]  # the last step's
    assert any(i.value == "**running**: epoch 2 of 4" for i in at.info)
    assert at.button(key="train.stop").disabled is False

    writer.set_status("queued", reason="resuming", checkpoint=True)  # queued again: the old speed is not shown
    at.run()
    (bar,) = [p.proto for p in at.get("progress")]
    assert bar.text == "queued at epoch 1.20 / 4 · step 60 / 200"

    writer.set_status("running", epoch=4, checkpoint=True)  # every step done; the test set is being measured
    writer.log({**step, "global_step": 200, "epoch": 4.0, "images_per_s": 150.0, "lr": 0.0})
    writer.close()
    at.run()
    (bar,) = [p.proto for p in at.get("progress")]
    assert bar.value == 100 and bar.text.endswith("all steps done: measuring the test accuracy"), bar.text
    assert any(i.value == "**running**: all 4 epochs done, measuring the test accuracy" for i in at.info)


def test_delete_asks_first_and_cancel_keeps_the_run(finished_run):
    at = open_train_page()
    at.button(key="train.delete").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    at.button(key="train.delete_no").click().run()
    assert finished_run.path.exists()
    at.button(key="train.delete").click().run()
    at.button(key="train.delete_yes").click().run()
    assert not at.exception
    assert not finished_run.path.exists()
    assert any("No runs yet" in i.value for i in at.info)


def test_a_shared_run_is_imported_shown_and_can_be_exported_again(mini_env, trained_once):
    at = open_train_page()
    hostile = archive.export_run(trained_once).replace(b"config.json", b"../cfg.json")  # a traversal, planted
    at.file_uploader(key="train.import").upload("bad.run.zip", hostile, "application/zip").run()
    assert any("Not imported: bad.run.zip was refused" in e.value for e in at.error)
    assert list(mini_env.iterdir()) == []  # nothing written
    at.file_uploader(key="train.import").upload("tiny.run.zip", archive.export_run(trained_once), "application/zip")
    at.run()
    assert not at.exception
    assert any("Imported **tiny-finished** from tiny.run.zip" in s.value for s in at.success)
    assert at.selectbox(key="train.run").value == "tiny-finished"
    run = run_records.load_run(mini_env / "tiny-finished")
    assert run.imported and run.state == "finished"
    assert any(f"test accuracy **{run.result['test_accuracy']:.1%}**" in s.value for s in at.success)
    assert any("imported from `tiny.run.zip`" in c.value for c in at.caption)
    assert points(figures(at)["loss"], "train (per step)") == len(run.steps())  # its curves, as for a local run
    assert at.button(key="train.resume").disabled is True
    (export,) = [b for b in at.get("download_button") if b.proto.id.endswith("train.export")]
    assert export.proto.deferred_file_id  # the archive is built when clicked, not on every redraw


def test_preset_fills_the_form_and_problems_block_the_start(mini_env):
    at = open_train_page()
    at.selectbox(key="train.preset").set_value("paper-2012").run()
    assert at.selectbox(key="train.variant").value == "paper"
    assert at.selectbox(key="train.norm").value == "lrn"
    assert at.number_input(key="train.lr").value == pytest.approx(0.01)
    assert at.text_input(key="train.milestones").value == "5, 8"
    set_form(at, epochs=2)
    assert at.text_input(key="train.milestones").value == "1, 2"  # the milestones keep their place in the run
    set_form(at, lr=0.0)
    at.text_input(key="train.milestones").set_value("one, 2").run()
    errors = " ".join(e.value for e in at.error)
    assert "learning rate must be in (0, 10]" in errors and "milestones must be whole epochs" in errors
    assert at.button(key="train.start").disabled is True
    assert not any(p.is_dir() for p in mini_env.iterdir())


def test_the_rate_follows_the_variant_unless_someone_typed_it(mini_env):
    """The fast demo's 0.05 is the cifar variant's SGD rate; switched to the paper variant the form takes 0.02
    and says so; a typed rate stays whatever the variant."""
    at = open_train_page()
    assert (at.selectbox(key="train.variant").value, at.number_input(key="train.lr").value) == ("cifar", 0.05)
    at.selectbox(key="train.variant").set_value("paper").run()
    assert at.number_input(key="train.lr").value == pytest.approx(0.02)
    assert any("0.02, the paper variant's default" in i.value for i in at.info)
    at.selectbox(key="train.variant").set_value("cifar").run()
    assert at.number_input(key="train.lr").value == pytest.approx(0.05)
    set_form(at, lr=0.03)
    at.selectbox(key="train.variant").set_value("paper").run()
    assert at.number_input(key="train.lr").value == pytest.approx(0.03)
    assert not at.exception


def wait_for(condition, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


def test_form_starts_real_runs_that_queue_for_the_device_and_shows_the_curves(mini_env, mini_dir):
    def record(name):
        return run_records.load_run(mini_env / name, with_metrics=False)

    # Hold the CPU's queue as another training process would, so both runs must queue (no race on timing).
    device = queues.try_take(mini_env, queues.Request(("cpu",)), "other-run")
    try:
        at = open_train_page()
        at.toggle(key="train.advanced").set_value(True).run()
        set_form(at, **TINY)
        at.button(key="train.start").click().run()
        assert not at.exception
        assert at.selectbox(key="train.run").value == "cifar-bn-sgd"
        stored = record("cifar-bn-sgd").config
        assert {k: stored[k] for k in TINY} == TINY
        assert stored["data_dir"] == str(mini_dir / "cifar-10-batches-py")  # the dataset the sidebar shows
        set_form(at, seed=1)  # a second, different run: a new name, never the same one twice
        at.button(key="train.start").click().run()
        assert at.selectbox(key="train.run").value == "cifar-bn-sgd-2"
        names = ["cifar-bn-sgd", "cifar-bn-sgd-2"]
        wait_for(lambda: all(record(n).status.get("reason", "").startswith("waiting") for n in names), 60,
                 "the runs never said that they wait for the device")
        at.run()
        assert any("**queued**: waiting for the device cpu: other-run is training" in i.value for i in at.info)
        queue = frame(at, "device", "training").set_index("device")
        assert queue.loc["cpu", "training"] == "other-run" and queue.loc["cpu", "waiting"] == 2
        assert queue.loc["cpu", "queue"] == ", ".join(names)  # oldest first
    finally:
        device.release()

    # The device is free: one run takes it, the other waits for that one.
    wait_for(lambda: any(record(n).state == "running" for n in names), 60, "no run took the free device")
    first = next(n for n in names if record(n).state == "running")
    second = next(n for n in names if n != first)
    wait_for(lambda: record(second).status.get("reason") == f"waiting for the device cpu: {first} is training", 30,
             f"{second} did not name {first} as the run it waits for")
    at.selectbox(key="train.run").set_value(second).run()
    assert any(f"**queued**: waiting for the device cpu: {first} is training" in i.value for i in at.info)
    assert jobs.stop(second, mini_env)

    assert jobs.wait(first, mini_env, timeout=180) == "finished"
    assert jobs.wait(second, mini_env, timeout=60) == "stopped"
    at.selectbox(key="train.run").set_value(first).run()
    run = run_records.load_run(mini_env / first)
    figs = figures(at)
    assert points(figs["loss"], "train (per step)") == len(run.steps()) > 0
    assert points(figs["accuracy"], "validation") == len(run.epochs()) == 2
    assert any("**finished**" in s.value for s in at.success)
    table = at.dataframe[0].value.set_index("run")
    assert table.loc[second, "state"] == "stopped" and table.loc[first, "state"] == "finished"


def test_fast_demo_trains_on_the_embedded_sample_when_no_dataset_is_named(monkeypatch, runs_dir, tmp_path):
    from alexnet import data

    monkeypatch.delenv("ALEXNET_DATA", raising=False)
    for var in ("HOME", "XDG_CACHE_HOME"):  # no full CIFAR-10 in the usual places, here or in the job
        monkeypatch.setenv(var, str(tmp_path))
    monkeypatch.setattr(data, "DEFAULT_DOWNLOAD_DIR", tmp_path / "alexnet-lab")
    at = open_train_page()
    assert at.selectbox(key="train.preset").value == "fast-cpu-demo"
    at.toggle(key="train.advanced").set_value(True).run()
    set_form(at, epochs=1, max_train_images=128, batch_size=64, threads=THREADS)
    at.button(key="train.start").click().run()
    run = run_records.load_run(runs_dir / "cifar-bn-sgd", with_metrics=False)
    assert run.config["data_dir"] is None  # the job resolves the same sample the sidebar shows
    assert jobs.wait(run.name, runs_dir, timeout=120) == "finished"
    result = run_records.load_run(run.path).result
    assert result["dataset_kind"] == "sample" and result["test_images"] == 972


# ---------------------------------------------------------------- what the page stands on

def test_presets_are_valid_and_fresh_copies():
    for preset in presets.PRESETS.values():
        assert preset.config().problems() == [], preset.name
        assert preset.description and "\n" not in preset.description
    paper = presets.get("paper 2012 (LRN, SGD)")
    assert (paper.base.variant, paper.base.norm, paper.base.lr, paper.base.milestones) == ("paper", "lrn", 0.01, [5, 8])
    modern = presets.get("modernised").base
    assert (modern.optimizer, modern.lr, modern.schedule, modern.early_stopping, modern.rotate_degrees) == \
        ("adam", 1e-4, "plateau", 10, 36.0)
    copy = paper.config()
    copy.milestones.append(9)
    assert paper.config().milestones == [5, 8]
    assert paper.config(epochs=20).milestones == [10, 16]
    assert presets.scale_milestones([5, 8], 10, 1) == [1]
    with pytest.raises(ValueError, match="unknown preset"):
        presets.get("alexnet-2025")


def test_cli_preset_flag_is_overridden_by_explicit_flags():
    args = build_parser().parse_args(["train", "--preset", "paper-2012", "--epochs", "4", "--lr", "0.02"])
    config = train_config(args)
    assert (config.variant, config.norm, config.lr, config.epochs, config.milestones) == ("paper", "lrn", 0.02, 4, [2, 3])
    args = build_parser().parse_args(["train", "--preset", "fast-cpu-demo", "--milestones", "3", "--schedule", "step"])
    assert train_config(args).milestones == [3]
    # A variant given without a rate trains at that variant's default SGD rate, from the defaults or a preset
    for argv in (["train", "--variant", "paper"], ["train", "--preset", "fast-cpu-demo", "--variant", "paper"]):
        assert train_config(build_parser().parse_args(argv)).lr == 0.02, argv
    assert train_config(build_parser().parse_args(["train", "--variant", "paper", "--lr", "0.05"])).lr == 0.05
    assert train_config(build_parser().parse_args(["train"])).lr == 0.05


def test_smoothing_is_debiased_and_keeps_gaps():
    assert charts.smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0
    assert charts.smooth([1.0, 3.0], 0.5) == pytest.approx([1.0, 1.75 / 0.75])  # (0.5*0.5 + 0.5*3) / (1 - 0.5**2)
    out = charts.smooth([float("nan"), 4.0], 0.5)
    assert out[1] == 4.0 and out[0] != out[0]
    with pytest.raises(ValueError):
        charts.smooth([1.0], 1.0)


def test_curves_figure_styles_runs_and_series():
    events = [{"event": "step", "epoch": 0.5, "global_step": 2, "loss": 2.3, "acc": 0.1, "time": 1.0},
              {"event": "step", "epoch": 1.0, "global_step": 4, "loss": 2.1, "acc": 0.2, "time": 2.0},
              {"event": "epoch", "epoch": 1, "global_step": 4, "train_loss": 2.2, "train_acc": 0.15,
               "val_loss": float("nan"), "val_acc": float("nan"), "time": 2.5}]
    fig = charts.curves_figure({"run-a": events, "run-b": events}, "loss", "time", smoothing=0.5, log_y=True)
    shown = [t for t in fig.data if t.showlegend is not False]
    assert [t.name for t in shown] == ["run-a · train (per step)", "run-b · train (per step)"]  # NaN val left out
    assert all(t.line.dash == "dash" for t in shown)
    assert shown[0].line.color == charts.run_color("run-a") != shown[1].line.color
    faint = [t for t in fig.data if t.showlegend is False]
    assert len(faint) == 2 and faint[0].y == (2.3, 2.1) and faint[0].opacity < 0.5
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.title.text == "training time (s)"
    per_epoch = charts.curves_figure({"run-a": events}, "acc", "epoch", per="epoch")
    assert [(t.name, t.x) for t in per_epoch.data] == [("train (per epoch)", (1.0,))]
    assert charts.curves_figure({}).layout.annotations[0].text == "no points yet"
