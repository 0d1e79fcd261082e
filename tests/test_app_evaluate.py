"""The Evaluate page and the Explain page's norm view in Streamlit's AppTest, on the demo model with the embedded
sample (a fresh machine) and on a finished run with the mini subset; what they show is compared with the
library's own answers. Background analysis is waited for through the library, then the page is run again."""
from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from alexnet import analysis, analysis_jobs, evaluation, norm_effect, receptive, visualize
from alexnet.checkpoints import load_model
from alexnet.data import SAMPLE_DIR, load_cifar10, source_at
from alexnet.images import load_image, to_cifar_array
from alexnet.models import build
from alexnet.predict import DEMO_WEIGHTS, EXAMPLES_DIR, predict
from alexnet.runs import RunWriter, read_json
from alexnet.weight_files import save_weights
from pages._shared import evaluate_view
from pages._shared.image_picker import CURRENT_IMAGE, FROM_PREDICT

from conftest import open_app_page

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU"),       # captum, on Explain
              pytest.mark.filterwarnings("ignore:.*required_grads has been set automatically")]


def figures(at) -> dict[str, dict]:
    return {chart.key: json.loads(chart.proto.spec) for chart in at.get("plotly_chart")}


def array(value) -> np.ndarray:
    """A plotly JSON array: a list, or plotly 6's typed array {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(n) for n in str(value.get("shape", len(flat))).split(",")])
    return np.asarray(value)


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def image_captions(at) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def finish(subject: analysis.Subject, task: analysis_jobs.Task) -> None:
    state = analysis_jobs.wait(subject, task, timeout=300)
    assert state["state"] == "finished", (state, subject.path(f"{task.name}.log").read_text())


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_WEIGHTS)


@pytest.fixture(scope="module")
def sample():
    return load_cifar10(source_at(SAMPLE_DIR))


def test_the_demo_on_the_sample_is_evaluated_in_the_background_and_a_mistake_opens_in_explain(
        empty_machine, demo, sample):
    at = open_app_page("pages/evaluate.py")
    assert not at.exception, at.exception
    assert at.selectbox(key="evaluate_model").value.startswith("demo")
    assert at.get("progress"), "the pass over the test set runs in the background, with progress"
    subject = analysis.subject(DEMO_WEIGHTS, sample.source, empty_machine)
    finish(subject, evaluate_view.PROBABILITIES)
    at.run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])

    expected = evaluation.from_probabilities(evaluation.test_probabilities(demo, sample), sample.test_y.numpy(),
                                             sample.classes)
    assert metrics(at) == {"Test accuracy": f"{expected.accuracy:.1%}", "Test images": "972",
                           "Wrong answers": f"{len(expected.mistakes()):,}"}
    matrix = figures(at)["evaluate_confusion"]["data"][0]
    np.testing.assert_array_equal(array(matrix["customdata"]), expected.counts)        # counts on hover
    np.testing.assert_allclose(array(matrix["z"]), expected.row_shares)                # shares as colour
    table = at.dataframe[0].value
    assert table["recall"].tolist() == [f"{r:.1%}" for r in expected.recall]
    assert table["precision"].tolist() == [f"{p:.1%}" for p in expected.precision]

    surest = expected.mistakes(limit=evaluate_view.GALLERY)
    names = sample.classes
    assert image_captions(at) == [f"#{m.index} {names[m.true]} → {names[m.predicted]} {m.confidence:.0%}"
                                  for m in surest]
    at.selectbox(key="evaluate_true").select("cat").run()
    at.selectbox(key="evaluate_answer").select("dog").run()
    assert image_captions(at) == [f"#{m.index} cat → dog {m.confidence:.0%}"
                                  for m in expected.mistakes(3, 5, limit=evaluate_view.GALLERY)]

    first = expected.mistakes(3, 5)[0]
    at.button(key=f"evaluate_explain_{first.index}").click().run()
    assert not at.exception, at.exception
    chosen = at.session_state[CURRENT_IMAGE]
    assert chosen.name == f"test image #{first.index} of {sample.source.label}" and chosen.true_label == 3
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(chosen.data))),
                                  sample.test_x[first.index].permute(1, 2, 0).numpy())
    assert at.radio(key="explain_source").value == FROM_PREDICT
    assert at.selectbox(key="explain_model").value.startswith("demo")
    assert [m.value for m in at.metric if m.label == "Predicted"] == ["dog"]


def test_a_finished_run_is_evaluated_from_its_record_at_once(runs_dir, mini_dir, mini_data, tiny_run, monkeypatch):
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    run = shutil.copytree(tiny_run, runs_dir / tiny_run.name)
    result = read_json(run / "result.json")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.switch_page("pages/evaluate.py").run()
    box = at.selectbox(key="evaluate_model")
    box.select(next(o for o in box.options if o.startswith(tiny_run.name))).run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])

    # Everything but the confidence is the run's record, shown before any background pass ends.
    assert metrics(at)["Test accuracy"] == f"{result['test_accuracy']:.1%}"
    matrix = figures(at)["evaluate_confusion"]["data"][0]
    np.testing.assert_array_equal(array(matrix["customdata"]), result["confusion_matrix"])
    assert any("until then they are in test-set order" in i.value for i in at.info)
    wrong = [i for i, (y, p) in enumerate(zip(mini_data.test_y.tolist(), result["predictions"])) if y != p]
    assert [c.split()[0] for c in image_captions(at)] == [f"#{i}" for i in wrong[:evaluate_view.GALLERY]]
    answered = np.asarray(result["confusion_matrix"]).sum(axis=0)
    precision = at.dataframe[0].value["precision"].tolist()
    assert [p == "undefined (never answered)" for p in precision] == [n == 0 for n in answered]

    subject = analysis.subject(run / "weights.safetensors", mini_data.source, runs_dir)
    finish(subject, evaluate_view.PROBABILITIES)
    at.run()
    probs = evaluation.load_probabilities(subject)
    expected = evaluation.from_result(result, mini_data.test_y.numpy(), probs)
    assert image_captions(at) == [
        f"#{m.index} {mini_data.classes[m.true]} → {mini_data.classes[m.predicted]} {m.confidence:.0%}"
        for m in expected.mistakes(limit=evaluate_view.GALLERY)]
    assert any(f"the same answer on {expected.agreement:,} of 1,017 images" in c.value for c in at.caption)
    assert sorted(p.name for p in (run / "analysis").glob("*.safetensors")) == [evaluation.PROBABILITIES]


def test_what_each_filter_responds_to_on_the_sample(empty_machine, demo, sample):
    at = open_app_page("pages/evaluate.py")
    at.session_state["evaluate_view"] = evaluate_view.FILTERS
    at.run()
    assert not at.exception, at.exception
    subject = analysis.subject(DEMO_WEIGHTS, sample.source, empty_machine)
    finish(subject, analysis_jobs.Task("top-images"))
    at.run()
    at.selectbox(key="filters_layer").select("conv3").run()
    at.number_input(key="filters_channel_conv3").set_value(7).run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    top = receptive.top_images(demo, sample.test_x, ["conv3"])["conv3"]
    assert image_captions(at) == [f"#{i} {sample.classes[int(sample.test_y[i])]}: {v:.3g}"
                                  for i, v in zip(top.images[7], top.values[7])]
    assert len(at.get("image")) == 9                                          # three by three

    at.button(key="start_maximise-conv3-7").click().run()
    objective = visualize.Objective("conv3", 7)
    finish(subject, analysis_jobs.Task("maximise", objective))
    at.run()
    kept = visualize.load_visualization(subject, objective)
    assert f"conv3 channel 7: {kept.start_value:.3g} on the random start, {kept.value:.3g} here" in image_captions(at)
    assert kept.value >= 10 * kept.start_value

    at.selectbox(key="filters_class").select(8).run()
    at.button(key="start_maximise-class-8").click().run()
    finish(subject, analysis_jobs.Task("maximise", visualize.Objective(klass=8)))
    at.run()
    ship = visualize.load_visualization(subject, visualize.Objective(klass=8))
    answer = predict(demo, ship.image)
    assert any(f"The model answers this picture as {answer.label} ({answer.confidence:.0%})" in c.value
               for c in at.caption)


def test_explain_shows_what_the_norm_does_for_bn_beside_lrn(runs_dir, mini_dir, monkeypatch, demo):
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    torch.manual_seed(0)
    lrn = build("cifar", "lrn").eval()
    writer = RunWriter.create(runs_dir, "lrn-run", {"variant": "cifar", "norm": "lrn", "epochs": 1})
    save_weights(writer.path / "weights.safetensors", lrn)
    writer.set_status("stopped", epoch=0, checkpoint=True)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.switch_page("pages/explain.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="norm_other").value.startswith("lrn-run")            # the other norm by default

    cat = to_cifar_array(load_image(EXAMPLES_DIR / "chelsea.png"), 32)
    shown = figures(at)
    for name, model in (("demo (cifar, BN, shipped with the app) (BN)", demo),
                        ("lrn-run (cifar, LRN, stopped) (LRN)", load_model(writer.path / "weights.safetensors"))):
        for stage in norm_effect.norm_effect(model, cat):
            points = next(t for t in shown[f"norm_stats_{stage.layer}"]["data"] if t.get("name") == name)  # means
            np.testing.assert_allclose(array(points["x"]), stage.statistics()["mean_before"], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(array(points["y"]), stage.statistics()["mean_after"], rtol=1e-5, atol=1e-6)
    sentences = " ".join(c.value for c in at.caption)
    assert "lateral inhibition" in sentences and "mean and variance of that channel over a training batch" in sentences


def test_a_run_whose_test_set_is_not_here_or_whose_record_is_damaged_gets_a_message(runs_dir, mini_dir, tiny_run,
                                                                                    monkeypatch):
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    other = shutil.copytree(tiny_run, runs_dir / "tested-elsewhere")
    result = read_json(other / "result.json")
    (other / "result.json").write_text(json.dumps({**result, "dataset": "CIFAR-10"}))
    damaged = shutil.copytree(tiny_run, runs_dir / "damaged")
    (damaged / "result.json").write_text('{"test_accuracy": 0.5, "predic')
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.switch_page("pages/evaluate.py").run()
    box = at.selectbox(key="evaluate_model")
    for name, message in (("tested-elsewhere", "the run was tested on CIFAR-10, the dataset found now is CIFAR-10 "
                                               "subset (6,102 images)"),
                          ("damaged", "the run's result holds no per-image predictions")):
        box.select(next(o for o in box.options if o.startswith(name))).run()
        assert not at.exception, at.exception
        assert any(f"**{box.value}** cannot be evaluated" in w.value and message in w.value for w in at.warning), \
            [w.value for w in at.warning]
        assert not at.get("progress") and not (runs_dir / name / "analysis").exists()   # nothing started
