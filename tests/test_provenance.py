"""Where a run came from: every field recorded by a real training process, a session per resume, a data fingerprint
that follows the data, and the words Compare uses when runs differ in more than their settings."""
from __future__ import annotations

import dataclasses
import subprocess
import threading
from pathlib import Path

import torch
import torchvision

from alexnet import provenance
from alexnet.config import TrainConfig
from alexnet.data import load_cifar10, resolve_dataset
from alexnet.runs import RunWriter
from alexnet.train import train

from conftest import THREADS

REPO = Path(__file__).resolve().parent.parent


def tiny(mini_data, **extra) -> TrainConfig:
    return TrainConfig(variant="cifar", norm="bn", epochs=2, batch_size=64, max_train_images=256, threads=THREADS,
                       log_every=2, schedule="constant", lr=0.01, data_dir=str(mini_data.source.path), **extra)


def test_a_run_records_its_software_hardware_code_and_data_and_each_resume(mini_data, tmp_path):
    config = tiny(mini_data)
    writer = RunWriter.create(tmp_path, "where", config.to_dict())
    stop = threading.Event()
    train(config, writer.path, on_event=lambda e: e["event"] == "epoch" and stop.set(), stop=stop, data=mini_data)
    (first,) = provenance.sessions(writer.path)
    assert set(provenance.FIELDS) <= set(first)
    assert (first["torch"], first["torchvision"]) == (torch.__version__, torchvision.__version__)
    assert first["cuda"] == (torch.version.cuda or "none") and first["device"] == "CPU" and first["device_key"] == "cpu"
    assert (first["processes"], first["gpus"], first["driver"], first["resumed"]) == (1, 0, "none", False)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert first["git_commit"].split()[0] == head and len(head) == 40
    assert (first["data"], first["data_images"]) == ("CIFAR-10 subset (6,102 images)", 6102)
    assert first["data_fingerprint"] == provenance.data_fingerprint(load_cifar10(resolve_dataset(config.data_dir)))

    train(config, writer.path, resume=True, data=mini_data)  # a second process would append the same way
    first_again, second = provenance.sessions(writer.path)
    assert first_again == first and second["resumed"] is True and second["time"] > first["time"]
    assert provenance.summary([first, second])["torch"] == torch.__version__  # one value: nothing changed


def test_a_new_start_of_the_same_folder_replaces_the_record(mini_data, tmp_path):
    """A run killed before its first checkpoint starts again from nothing: its earlier session made nothing."""
    config = dataclasses.replace(tiny(mini_data), epochs=1)
    writer = RunWriter.create(tmp_path, "again", config.to_dict())
    provenance.record(writer.path, {"torch": "0.0-never-trained"}, resumed=False)
    train(config, writer.path, resume=True, data=mini_data)  # resume=True, but there was no checkpoint
    (only,) = provenance.sessions(writer.path)
    assert only["torch"] == torch.__version__ and only["resumed"] is False


def test_the_data_fingerprint_follows_labels_and_pixels(mini_data, monkeypatch, tmp_path):
    base = provenance.data_fingerprint(mini_data)
    relabelled = mini_data.train_y.clone()
    relabelled[17] = (relabelled[17] + 1) % 10
    one_pixel = mini_data.test_x.clone()
    one_pixel[3, 0, 5, 5] ^= 1
    assert provenance.data_fingerprint(dataclasses.replace(mini_data, train_y=relabelled)) != base
    assert provenance.data_fingerprint(dataclasses.replace(mini_data, test_x=one_pixel)) != base
    from alexnet import data

    monkeypatch.delenv(data.ENV_VAR, raising=False)  # no dataset named or in the usual places: the embedded sample
    monkeypatch.setattr(data, "usual_places", lambda: [tmp_path])
    sample = load_cifar10(resolve_dataset())
    assert sample.source.kind == "sample"
    assert provenance.data_fingerprint(sample) != base
    assert provenance.data_fingerprint(load_cifar10(mini_data.source)) == base  # read again: the same


def test_outside_a_git_checkout_the_code_says_so(tmp_path):
    assert provenance.git_commit(tmp_path) == provenance.NOT_GIT == "not a git checkout"


def test_runs_that_differ_in_more_than_their_settings_are_named():
    here = {"torch": "2.14.1", "device": "CPU", "device_key": "cpu", "processes": "1", "data_fingerprint": "ab"}
    summaries = {"mine": here, "theirs": {**here, "torch": "2.15.0", "device": "NVIDIA H200", "device_key": "cuda:3"},
                 "old": {}}
    differ = provenance.differences(summaries)
    assert set(differ) == {"torch", "device", "device_key"}  # "old" has no record and is left out
    assert differ["torch"] == {"mine": "2.14.1", "theirs": "2.15.0"}
    text = provenance.warning(differ, ["old"])
    assert text.startswith("These runs differ in more than the settings compared: torch (2.14.1 / 2.15.0); "
                           "device (CPU / NVIDIA H200).")
    assert "device used" not in text  # which GPU of a machine trained it changes nothing
    assert "old has no record of where it came from" in text
    assert provenance.warning(provenance.differences({"a": here, "b": dict(here)}), []) is None
    assert provenance.summary([{"torch": "2.14.1"}, {"torch": "2.15.0"}, {"torch": "2.15.0"}]) == \
        {"torch": "2.14.1 → 2.15.0"}
