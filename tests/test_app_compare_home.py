"""The Compare and Home pages through Streamlit's AppTest, on real finished runs.

The runs are a real paired experiment: LRN and BN, one seed, trained in this process for one
epoch on 256 images of the CIFAR-10 mini subset and recorded as `experiment.launch` records
them. The pages must show what those run folders hold: table rows, differing keys, curves,
the images one run gets right and the other wrong, the verdict.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import app_test as app_test_module

from alexnet import archive, compare, experiment, jobs, provenance
from alexnet import runs as run_records
from alexnet.models import build, count_parameters
from alexnet.train import train
from conftest import THREADS, open_app_page

APP = Path(__file__).resolve().parent.parent / "app.py"


@pytest.fixture(scope="module")
def paired(tmp_path_factory, mini_data):
    """A finished LRN-versus-BN experiment (one seed, one epoch, 256 training images), trained for real."""
    root = tmp_path_factory.mktemp("compare-runs")
    plan = experiment.ExperimentPlan(seeds=1, epochs=1, max_train_images=256, batch_size=64, threads=THREADS,
                                     log_every=1, data_dir=str(mini_data.source.path), recipe="same")

    def start(config, name, folder):  # jobs.start, but in this process and to the end
        writer = run_records.RunWriter.create(folder, name, config.to_dict())
        train(config, writer.path, data=mini_data)
        return name

    record = experiment.launch(plan, root, name="pair", start=start)
    runs = {entry["norm"]: run_records.load_run(root / entry["run"]) for entry in record.runs}
    return root, record, runs


@pytest.fixture
def env(monkeypatch, mini_dir):
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))


@pytest.fixture
def with_runs(env, monkeypatch, paired):
    monkeypatch.setenv("ALEXNET_RUNS", str(paired[0]))
    return paired


@pytest.fixture
def media(monkeypatch):
    """The files a download button serves, by the button's url: AppTest drops its in-memory store after each run,
    so keep every store it makes and read the last one (that run's)."""
    stores = []

    class Kept(MemoryMediaFileStorage):
        def __init__(self, endpoint):
            super().__init__(endpoint)
            stores.append(self)

    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", Kept)
    return lambda url: stores[-1].get_file(url.rsplit("/", 1)[-1])




def charts_by_title(at: AppTest) -> dict[str, dict]:
    """Plotly figures by their y-axis title (or their title), as the browser receives them."""
    out = {}
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        layout = spec["layout"]
        title = (layout.get("title") or {}).get("text") or (layout.get("yaxis", {}).get("title") or {}).get("text")
        out[title] = spec
    return out


def frame(at: AppTest, *columns: str, nth: int = 0):
    """The nth dataframe holding all these columns (AppTest's dataframes carry no key)."""
    found = [d.value for d in at.dataframe if all(c in d.value.columns for c in columns)]
    assert len(found) > nth, f"no table with columns {columns}"
    return found[nth]


def array(value) -> list:
    """A figure's array as a list: plotly sends numpy arrays base64-encoded ({"bdata", "dtype", "shape"})."""
    if isinstance(value, dict) and "bdata" in value:
        shape = [int(n) for n in str(value.get("shape", "-1")).split(",")]
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape).tolist()
    return value


def texts(elements) -> str:
    return "\n".join(e.value for e in elements)


# ---------------------------------------------------------------- Home

def test_home_renders_on_an_empty_machine(env, runs_dir):
    at = open_app_page("pages/home.py")
    assert "15.3%" in texts(at.markdown) and "26.2%" in texts(at.markdown)
    assert any("No finished runs yet" in i.value and "Train" in i.value for i in at.info)
    published = frame(at, "source", "accuracy (%)")
    assert list(published["source"]) == ["Krizhevsky, cuda-convnet (2011)", "gregorycotton/alexnet (faithful PyTorch)",
                                         "karan-saj, Keras educational notebook", "metanthropics, 'Revisiting AlexNet'"]
    assert list(published["accuracy (%)"]) == pytest.approx([89.0, 76.56, 74.40, 90.57])
    assert "95.7%" in published.iloc[3]["as reported"] and "validation set" in published.iloc[3]["measured on"]
    assert list(published.columns[:4]) == ["source", "accuracy (%)", "measured on", "caveat"]  # read first
    table = next(d for d in at.dataframe if "caveat" in d.value.columns).proto
    assert table.row_height > 64  # over 4rem Streamlit wraps a long caveat in its cell instead of cutting it
    columns = json.loads(table.columns)
    assert isinstance(columns["caveat"]["width"], int) and columns["caveat"]["width"] <= 400
    assert len(at.get("plotly_chart")) == 2  # the architecture and the replication chart


def test_home_architecture_follows_variant_and_norm(env, runs_dir):
    at = open_app_page("pages/home.py")
    assert at.metric[0].value == f"{count_parameters(build('paper', 'lrn')):,}" == "56,909,194"
    at.selectbox(key="home.variant").set_value("cifar")
    at.selectbox(key="home.norm").set_value("bn")
    at.run()
    assert not at.exception
    assert at.metric[0].value == f"{count_parameters(build('cifar', 'bn')):,}"
    spec = charts_by_title(at)["cifar variant, norm bn"]
    blocks = spec["data"][0]
    layers = frame(at, "layer", "multiply-adds")
    assert len(blocks["x"]) == len(layers) == 23
    assert list(layers["layer"][:4]) == ["conv1", "relu", "BN", "pool1"]
    assert "64×32×32" in blocks["text"]


def test_home_sets_this_projects_runs_beside_the_published_ones(with_runs):
    _, _, runs = with_runs
    at = open_app_page("pages/home.py")
    own = frame(at, "source", "accuracy (%)", nth=1).set_index("norm")
    for norm, label in (("lrn", "LRN"), ("bn", "BN")):
        result = runs[norm].result
        row = own.loc[label]
        assert row["accuracy (%)"] == pytest.approx(100 * result["test_accuracy"])
        assert row["measured on"] == result["dataset"] == "CIFAR-10 subset (6,102 images)"
        assert row["hardware"] == result["device"] and not row["full CIFAR-10"]
        assert "not the full CIFAR-10" in row["caveat"]
    assert not any("No finished runs yet" in i.value for i in at.info)


# ---------------------------------------------------------------- Compare

def test_compare_shows_curves_table_and_differing_keys(with_runs):
    _, _, runs = with_runs
    at = open_app_page("pages/compare.py")
    assert sorted(at.multiselect(key="compare.runs").value) == sorted(r.name for r in runs.values())
    table = frame(at, "run", "test acc (%)").set_index("run")
    for norm, run in runs.items():
        row = table.loc[run.name]
        assert (row["state"], row["norm"], row["variant"], row["epochs"]) == ("finished", norm, "cifar", "1 / 1")
        assert row["test acc (%)"] == pytest.approx(100 * run.result["test_accuracy"])
        assert row["parameters"] == run.result["parameters"]
        assert row["best val acc (%)"] == pytest.approx(100 * run.epochs()[0]["val_acc"])
    differ = frame(at, "key", *(r.name for r in runs.values()))
    assert list(differ["key"]) == ["norm"]  # a paired experiment: the norm and nothing else
    assert {differ.iloc[0][runs["lrn"].name], differ.iloc[0][runs["bn"].name]} == {"lrn", "bn"}
    shared = frame(at, "key", "value")
    assert "seed" in list(shared["key"]) and "lr" in list(shared["key"])
    figures = charts_by_title(at)
    for title in ("loss", "accuracy"):
        names = {t["name"] for t in figures[title]["data"]}
        for run in runs.values():
            assert f"{run.name} · validation" in names and f"{run.name} · test" in names
        # The legend: one entry a run, horizontal, under the plot (beside it, it left a phone ~110 px of plot).
        legend = figures[title]["layout"]["legend"]
        assert (legend["orientation"], legend["yref"], legend["y"]) == ("h", "container", 0)
        shown = [t["name"] for t in figures[title]["data"] if t.get("showlegend") is not False]
        assert sorted(shown) == sorted(r.name for r in runs.values())
    colors = {t["line"]["color"] for t in figures["loss"]["data"] if t["name"].endswith("validation")}
    assert len(colors) == 2  # one colour a run
    assert {t["name"] for t in figures["learning rate"]["data"]} == {r.name for r in runs.values()}
    (points,) = figures["test accuracy"]["data"]  # settings against accuracy: only the norm differs, a scatter
    assert points["type"] == "scatter" and figures["test accuracy"]["layout"]["xaxis"]["ticktext"] == ["bn", "lrn"]
    # The columns most comparisons read first come first: the target's column beside the accuracies.
    assert list(table.reset_index().columns[:6]) == ["run", "test acc (%)", "best val acc (%)", "epochs to 50% val",
                                                     "best epoch", "epochs"]
    assert not at.exception


def test_compare_with_one_run_shows_its_config_and_asks_for_a_second(with_runs):
    _, _, runs = with_runs
    at = open_app_page("pages/compare.py")
    one = runs["lrn"]
    at.multiselect(key="compare.runs").set_value([one.name]).run()
    assert not at.exception
    shown = texts(at.markdown)
    assert f"**Config of {one.name}**: pick a second run above" in shown
    assert "identical" not in shown and "they share" not in " ".join(e.label for e in at.expander)
    config = frame(at, "key", "value")
    assert dict(zip(config["key"], config["value"])) == {k: str(v) for k, v in one.config.items()}
    assert list(frame(at, "run", "test acc (%)")["run"]) == [one.name]


def test_compare_exports_the_table_and_every_chart(with_runs, media):
    root, record, _ = with_runs
    at = open_app_page("pages/compare.py")
    chosen = [run_records.load_run(root / name) for name in at.multiselect(key="compare.runs").value]
    assert len(chosen) == 2
    buttons = at.get("download_button")
    assert [button.proto.label for button in buttons] == ["Table as CSV", "Metrics + configs (JSON)", "Export run"]
    csv_file = media(buttons[0].proto.url)
    assert (csv_file.filename, csv_file.mimetype) == ("runs.csv", "text/csv")
    target = at.number_input(key="compare.target").value / 100
    expected = compare.rows_to_csv(compare.summary_rows([compare.summarize_run(r, target) for r in chosen], target))
    assert csv_file.content.decode() == expected
    assert [line.split(",")[0] for line in expected.splitlines()] == ["run", *(r.name for r in chosen)]
    json_file = media(buttons[1].proto.url)
    assert (json_file.filename, json_file.mimetype) == ("runs.json", "application/json")
    exported = json.loads(json_file.content)
    assert [r["name"] for r in exported["runs"]] == [r.name for r in chosen]
    for run, out in zip(chosen, exported["runs"]):
        assert out["config"] == run.config and out["metrics"] == run.metrics and out["status"] == run.status
        assert out["result"]["test_accuracy"] == run.result["test_accuracy"] and "predictions" not in out["result"]
    # Every chart's camera button saves a PNG named after what it shows: curves, learning rates, settings against
    # accuracy, per class, both confusion matrices, and the experiment tab's two seed bands.
    a, b = (r.name for r in chosen)
    configs = [json.loads(chart.proto.config) for chart in at.get("plotly_chart")]
    assert sorted(c["toImageButtonOptions"]["filename"] for c in configs) == sorted([
        "compare-loss", "compare-acc", "compare-lr", "compare-settings", "compare-per-class", f"confusion-{a}",
        f"confusion-{b}", f"{record.name}-acc", f"{record.name}-loss"])
    for config in configs:
        assert config["toImageButtonOptions"]["format"] == "png" and config["displaylogo"] is False


def test_compare_side_by_side_on_the_test_set(with_runs, mini_data, media):
    _, _, runs = with_runs
    at = open_app_page("pages/compare.py")
    a, b = at.selectbox(key="compare.a").value, at.selectbox(key="compare.b").value
    by_name = {r.name: r for r in runs.values()}
    assert {a, b} == set(by_name)
    figures = charts_by_title(at)
    assert figures["Per-class test accuracy"]["data"][0]["y"] == pytest.approx(
        by_name[figures["Per-class test accuracy"]["data"][0]["name"]].result["per_class_accuracy"])
    for name in (a, b):
        title = f"{name}: {by_name[name].result['test_accuracy']:.1%} test"
        assert array(figures[title]["data"][0]["customdata"]) == by_name[name].result["confusion_matrix"]
    a_only, b_only = compare.disagreements(by_name[a].result["predictions"], by_name[b].result["predictions"],
                                           mini_data.test_y.tolist())
    shown = texts(at.markdown)
    assert f"**A right, B wrong**: {len(a_only):,} images" in shown
    assert f"**B right, A wrong**: {len(b_only):,} images" in shown
    assert len(at.get("image")) == (len(a_only) > 0) + (len(b_only) > 0)  # one image strip a gallery
    for strip in at.get("image"):  # PNG, not JPEG: the enlarged pixels stay sharp
        for image in strip.proto.imgs:
            picture = media(image.url)
            assert picture.mimetype == "image/png" and picture.content[:8] == b"\x89PNG\r\n\x1a\n"
    for name in (a, b):  # confusion matrices legible in half a page: 11 px cells, short upright class names
        spec = figures[f"{name}: {by_name[name].result['test_accuracy']:.1%} test"]
        assert spec["data"][0]["textfont"]["size"] >= 10 and spec["layout"]["xaxis"]["tickangle"] == 0
        assert spec["layout"]["xaxis"]["ticktext"][:2] == ["plane", "auto"]
    per_class = figures["Per-class test accuracy"]["layout"]["legend"]
    assert (per_class["orientation"], per_class["yref"], per_class["y"]) == ("h", "container", 0)  # off the title
    at.selectbox(key="compare.gallery_class").set_value("cat").run()
    cats = [i for i in a_only if mini_data.test_y[i] == 3]
    assert f"**A right, B wrong**: {len(cats):,} images" in texts(at.markdown)


def test_compare_with_one_run_as_both_a_and_b_asks_for_two(with_runs):
    _, _, runs = with_runs
    at = open_app_page("pages/compare.py")
    at.selectbox(key="compare.b").set_value(at.selectbox(key="compare.a").value).run()
    assert not at.exception
    assert any("Pick two different runs" in i.value for i in at.info)


def test_compare_controls_change_the_curves_and_the_table(with_runs):
    _, _, runs = with_runs
    at = open_app_page("pages/compare.py")
    at.segmented_control(key="compare.x").set_value("time")
    at.segmented_control(key="compare.per").set_value("step")
    at.slider(key="compare.smoothing").set_value(0.6)
    at.number_input(key="compare.target").set_value(5.0)
    at.run()
    assert not at.exception
    loss = charts_by_title(at)["loss (smoothed)"]
    assert loss["layout"]["xaxis"]["title"]["text"] == "training time (s)"
    run = runs["bn"]
    raw = [t for t in loss["data"] if t["name"] == f"{run.name} · train (per step) (raw)"][0]
    assert raw["y"] == pytest.approx([e["loss"] for e in run.steps()]) and raw["opacity"] < 0.5
    assert raw["x"] == pytest.approx([e["time"] for e in run.steps()])
    table = frame(at, "run", "test acc (%)")
    assert "epochs to 5% val" in table.columns
    assert list(table["epochs to 5% val"]) == [1, 1]  # any trained net beats 5% on ten classes
    at.checkbox(key="compare.log_y").check().run()
    assert charts_by_title(at)["loss (smoothed)"]["layout"]["yaxis"]["type"] == "log"


def test_compare_experiment_tab_gives_the_verdict(with_runs):
    _, record, runs = with_runs
    at = open_app_page("pages/compare.py")
    assert at.selectbox(key="exp.chosen").value == record.name
    verdict = [w.value for w in at.warning if "Verdict" in w.value]
    assert verdict and "one run a side" in verdict[0] and "cannot tell" in verdict[0]
    pairs = frame(at, "seed", "BN − LRN (points)")
    assert list(pairs["seed"]) == [0]
    assert pairs.iloc[0]["LRN test acc (%)"] == pytest.approx(100 * runs["lrn"].result["test_accuracy"])
    assert pairs.iloc[0]["BN − LRN (points)"] == pytest.approx(
        100 * (runs["bn"].result["test_accuracy"] - runs["lrn"].result["test_accuracy"]))
    band = charts_by_title(at)["validation accuracy"]
    assert {t["name"] for t in band["data"] if t.get("showlegend") is not False} == \
        {"LRN (mean of 1 run)", "BN (mean of 1 run)"}
    assert any("LSUV init, SGD with momentum 0.9" in c.value for c in at.caption)  # the recipe, said


def test_compare_shows_where_the_runs_came_from_and_warns_when_more_than_settings_differ(env, paired, runs_dir):
    import shutil

    root, _, runs = paired
    for run in runs.values():
        shutil.copytree(run.path, runs_dir / run.name)
    lrn, bn = runs["lrn"].name, runs["bn"].name
    at = open_app_page("pages/compare.py")
    assert not any("differ in more than the settings" in w.value for w in at.warning)  # both trained here
    table = frame(at, "environment", lrn, bn).set_index("environment")
    assert table.loc["torch", lrn] == table.loc["torch", bn] == provenance.sessions(runs["lrn"].path)[0]["torch"]
    assert table.loc["data: fingerprint", lrn] == table.loc["data: fingerprint", bn]

    # The BN run as a colleague's machine would have recorded it (then shared it): another torch, on a GPU.
    path = runs_dir / bn / provenance.ENV_FILE
    (session,) = json.loads(path.read_text())["sessions"]
    path.write_text(json.dumps({"sessions": [{**session, "torch": "2.99.0", "device": "NVIDIA H200",
                                              "device_key": "cuda:3"}]}))
    at.run()
    (warning,) = [w.value for w in at.warning if "differ in more than the settings" in w.value]
    for field, here, there in (("torch", session["torch"], "2.99.0"), ("device", "CPU", "NVIDIA H200")):
        assert f"{field} ({here} / {there})" in warning or f"{field} ({there} / {here})" in warning, warning
    assert "device used" not in warning  # which GPU of a machine, no warning
    assert frame(at, "environment", lrn, bn).set_index("environment").loc["torch", bn] == "2.99.0"


def test_compare_imports_a_shared_run_into_the_comparison_and_exports_one(env, paired, runs_dir):
    _, _, runs = paired
    at = open_app_page("pages/compare.py")
    assert any("No runs of your own yet" in i.value for i in at.info)
    shown = at.multiselect(key="compare.runs").value  # the shipped runs, until there are runs of one's own
    assert shown and all(n.endswith(" (shipped)") for n in shown)
    at.file_uploader(key="compare.import").upload("lrn.run.zip", archive.export_run(runs["lrn"].path),
                                                  "application/zip").run()
    assert not at.exception
    name = runs["lrn"].name
    assert any(f"Imported **{name}** from lrn.run.zip" in s.value for s in at.success)
    assert at.multiselect(key="compare.runs").value == [*shown, name]
    table = frame(at, "run", "test acc (%)").set_index("run")
    assert table.loc[name, "test acc (%)"] == pytest.approx(100 * runs["lrn"].result["test_accuracy"])
    (export,) = [b for b in at.get("download_button") if b.proto.id.endswith("compare.export")]
    assert export.proto.deferred_file_id


def test_compare_on_an_empty_machine(env, runs_dir):
    at = open_app_page("pages/compare.py")  # the shipped experiment (tests/test_shipped.py checks what it shows)
    assert any("No runs of your own yet" in i.value for i in at.info)
    assert not any("No experiments yet" in i.value for i in at.info)
    assert at.selectbox(key="exp.chosen").value.endswith(" (shipped)") and at.get("plotly_chart")
    assert at.button(key="exp.start").disabled is False


def test_experiment_button_queues_the_planned_runs(env, runs_dir, monkeypatch, mini_dir):
    started = []

    def queue(config, name, root):  # jobs.start without the process: the run folder, queued
        run_records.RunWriter.create(root, name, config.to_dict())
        started.append((name, config))
        return name

    monkeypatch.setattr(jobs, "start", queue)
    at = open_app_page("pages/compare.py")
    at.number_input(key="exp.seeds").set_value(2)
    at.number_input(key="exp.epochs").set_value(1)
    at.number_input(key="exp.max_train_images").set_value(256)
    at.radio(key="exp.recipe").set_value("own-rate")
    at.run()
    assert "--seeds 2 --epochs 1 --recipe own-rate --max-train-images 256" in at.code[0].value
    at.button(key="exp.start").click().run()
    assert not at.exception
    assert [(n, c.norm, c.seed, c.lr) for n, c in started] == [
        ("lrn-vs-bn-cifar-lrn-s0", "lrn", 0, 0.02), ("lrn-vs-bn-cifar-bn-s0", "bn", 0, 0.05),
        ("lrn-vs-bn-cifar-lrn-s1", "lrn", 1, 0.02), ("lrn-vs-bn-cifar-bn-s1", "bn", 1, 0.05)]
    assert all(c.data_dir == str(mini_dir / "cifar-10-batches-py") and c.max_train_images == 256 for _, c in started)
    assert any("Queued **lrn-vs-bn-cifar**" in s.value for s in at.success)
    assert at.selectbox(key="exp.chosen").value == "lrn-vs-bn-cifar"
    assert "0 of 4 runs finished (4 queued)" in at.get("progress")[0].proto.text
    assert experiment.load(runs_dir, "lrn-vs-bn-cifar").recipe == "own-rate"
