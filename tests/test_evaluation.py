"""alexnet.evaluation and alexnet.analysis: a run's evaluation from its record, the demo's from one pass, and the
probabilities kept beside the run, never in its record."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from alexnet import analysis, evaluation
from alexnet.checkpoints import load_model
from alexnet.data import SAMPLE_DIR, source_at
from alexnet.predict import DEMO_WEIGHTS
from alexnet.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")  # one thread, as these views compute in the app; put back after


@pytest.fixture
def run(tiny_run, runs_dir):
    return shutil.copytree(tiny_run, runs_dir / tiny_run.name)


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_WEIGHTS)


def test_a_runs_evaluation_is_its_record(run, mini_data):
    result = read_json(run / "result.json")
    ev = evaluation.from_result(result, mini_data.test_y.numpy())
    np.testing.assert_array_equal(ev.counts, result["confusion_matrix"])
    assert ev.accuracy == pytest.approx(result["test_accuracy"])
    assert ev.recall == pytest.approx(result["per_class_accuracy"])           # the run's per-class accuracy
    counts = np.asarray(result["confusion_matrix"])
    answered = counts.sum(axis=0)
    for k, p in enumerate(ev.precision):
        assert p == (None if answered[k] == 0 else pytest.approx(counts[k, k] / answered[k]))
    assert ev.recorded and ev.confidence is None
    wrong = ev.mistakes()
    assert [m.index for m in wrong] == [i for i, (y, p) in enumerate(zip(mini_data.test_y.tolist(),
                                                                           result["predictions"])) if y != p]


def test_a_class_never_answered_has_no_precision_not_zero():
    labels = np.array([0, 0, 1, 1, 2])
    probs = np.eye(3, dtype=np.float32)[[0, 1, 1, 1, 1]] * 0.8 + 0.2 / 3     # never answers class 2
    ev = evaluation.from_probabilities(probs, labels, ("a", "b", "c"))
    assert ev.precision[2] is None and ev.recall[2] == 0.0
    assert ev.precision[1] == pytest.approx(2 / 4) and ev.recall[0] == pytest.approx(1 / 2)


def test_probabilities_give_the_mistakes_their_order_and_are_kept_beside_the_record(run, mini_data, runs_dir):
    model = load_model(run / "weights.safetensors")
    subject = analysis.subject(run / "weights.safetensors", mini_data.source, runs_dir)
    assert subject.folder == run / "analysis" and subject.run == run.name
    assert evaluation.load_probabilities(subject) is None
    record = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    probs = evaluation.test_probabilities(model, mini_data)
    evaluation.save_probabilities(subject, probs)
    kept = evaluation.load_probabilities(subject)
    np.testing.assert_array_equal(kept, probs)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == record   # the record is untouched

    result = read_json(run / "result.json")
    ev = evaluation.from_result(result, mini_data.test_y.numpy(), kept)
    predictions = np.asarray(result["predictions"])
    assert ev.agreement == int((probs.argmax(1) == predictions).sum()) > 0.9 * len(predictions)
    mistakes = ev.mistakes()
    sure = [m.confidence for m in mistakes]
    assert sure == sorted(sure, reverse=True)
    assert all(m.confidence == pytest.approx(float(probs[m.index, m.predicted])) for m in mistakes)
    cats_as_dogs = ev.mistakes(true=3, predicted=5)
    assert all(m.true == 3 and m.predicted == 5 for m in cats_as_dogs)
    assert len(cats_as_dogs) == ev.counts[3, 5]


def test_newer_weights_or_another_test_set_make_the_kept_probabilities_stale(run, mini_data, runs_dir):
    subject = analysis.subject(run / "weights.safetensors", mini_data.source, runs_dir)
    evaluation.save_probabilities(subject, np.zeros((len(mini_data.test_y), 10), dtype=np.float32))
    assert evaluation.load_probabilities(subject) is not None
    sample = source_at(SAMPLE_DIR)
    assert sample.kind == "sample"
    assert evaluation.load_probabilities(analysis.subject(run / "weights.safetensors", sample, runs_dir)) is None
    later = (run / "weights.safetensors").stat().st_mtime + 60
    os.utime(run / "weights.safetensors", (later, later))                 # a resumed run wrote new weights
    assert evaluation.load_probabilities(subject) is None


def test_the_demo_is_kept_under_its_hash_and_its_accuracy_is_the_model_cards(demo, mini_data, runs_dir):
    subject = analysis.subject(DEMO_WEIGHTS, mini_data.source, runs_dir)
    assert subject.run is None
    assert subject.folder.relative_to(runs_dir).parts == (
        ".analysis", analysis.weights_digest(DEMO_WEIGHTS)[:16], "CIFAR-10-subset-6-102-images")
    ev = evaluation.from_probabilities(evaluation.test_probabilities(demo, mini_data), mini_data.test_y.numpy(),
                                       mini_data.classes)
    assert int(np.trace(ev.counts)) == 678 and ev.accuracy == pytest.approx(0.6667, abs=5e-5)   # MODEL_CARD.md
    assert not ev.recorded


def test_a_kept_file_is_read_as_tensors_only(run, mini_data, runs_dir):
    """safetensors: a header and raw numbers; a file whose header is damaged reads as missing."""
    subject = analysis.subject(run / "weights.safetensors", mini_data.source, runs_dir)
    evaluation.save_probabilities(subject, np.ones((len(mini_data.test_y), 10), dtype=np.float32))
    path = subject.path(evaluation.PROBABILITIES)
    header = json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])
    assert set(header) == {"__metadata__", "probabilities"}
    path.write_bytes(b"\x00" * 64)
    assert evaluation.load_probabilities(subject) is None
