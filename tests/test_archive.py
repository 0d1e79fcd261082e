"""Sharing a run: export then import gives the same run, and hostile archives are refused with a message, having
written nothing (path traversal, links, pickles, zip bombs, oversize files, lies about sizes and contents).

The run is real: trained here for one epoch on 256 images of the CIFAR-10 mini subset. The hostile archives are
built as an attacker would build them, with zipfile, around that run's real files.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest

from alexnet import archive, jobs, provenance
from alexnet.checkpoints import load_model
from alexnet.cli import main
from alexnet.config import TrainConfig
from alexnet.predict import available_models
from alexnet.runs import RunWriter, list_runs, load_run
from alexnet.train import train

from conftest import THREADS


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mini_data) -> Path:
    config = TrainConfig(variant="cifar", norm="bn", epochs=1, batch_size=64, max_train_images=256, threads=THREADS,
                         log_every=1, schedule="constant", lr=0.01, data_dir=str(mini_data.source.path))
    writer = RunWriter.create(tmp_path_factory.mktemp("shared"), "shared-run", config.to_dict())
    train(config, writer.path, data=mini_data)
    return writer.path


def files_of(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in archive.MEMBERS if (run / name).exists()}


def build(files: dict[str, bytes], manifest: dict | None = None, extra: list[tuple[zipfile.ZipInfo, bytes]] = (),
          listed: dict[str, bytes] | None = None) -> bytes:
    """A zip of `files` with a manifest that describes `listed` (default: the files), then `extra` members as given."""
    listed = files if listed is None else listed
    manifest = manifest or {"format": archive.FORMAT, "version": archive.VERSION, "run": "shared-run", "exported": 0,
                            "files": {n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                                      for n, d in listed.items()}}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(archive.MANIFEST, json.dumps(manifest))
        for name, data in files.items():
            z.writestr(name, data)
        for info, data in extra:
            z.writestr(info, data)
    return out.getvalue()


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_export_then_import_gives_the_same_run(finished, tmp_path):
    data = archive.export_run(finished)
    root = tmp_path / "theirs"
    name = archive.import_run(data, root, filename="shared-run.run.zip")
    assert name == "shared-run" and sorted(os.listdir(root)) == ["shared-run"]  # no staging folder left
    mine, theirs = load_run(finished), load_run(root / name)
    for member in ("config.json", "metrics.jsonl", "result.json", "environment.json", "weights.safetensors"):
        assert (root / name / member).read_bytes() == (finished / member).read_bytes(), member
    assert not (root / name / "state.pt").exists() and (finished / "state.pt").exists()  # the pickle stays home
    assert (theirs.config, theirs.metrics, theirs.result) == (mine.config, mine.metrics, mine.result)
    assert provenance.sessions(theirs.path) == provenance.sessions(mine.path)
    assert theirs.state == "finished" and theirs.imported and not mine.imported
    assert theirs.status["imported"]["from"] == "shared-run" and theirs.status["imported"]["archive"] == \
        "shared-run.run.zip"
    assert theirs.status["created"] == mine.status["created"] and "pid" not in theirs.status
    # Shown, compared and explained like a local run: listed, its weights load, the model pickers offer it.
    assert [r.name for r in list_runs(root)] == [name]
    original, imported = load_model(finished / "weights.safetensors"), load_model(root / name / "weights.safetensors")
    assert all((a == b).all() for a, b in zip(original.state_dict().values(), imported.state_dict().values()))
    assert [c.path for c in available_models(root) if c.kind == "run"] == [root / name / "weights.safetensors"]
    assert archive.import_run(data, root) == "shared-run-2"  # a taken name gets a number


def test_an_archive_of_a_run_in_progress_imports_as_stopped_and_not_resumable(finished, tmp_path):
    files = files_of(finished)
    status = json.loads(files["status.json"])
    files["status.json"] = json.dumps({**status, "state": "running", "pid": os.getpid(), "reason": "x"}).encode()
    name = archive.import_run(build(files), tmp_path, name="../../live one")
    run = load_run(tmp_path / name)
    assert name == "live-one" and run.state == "stopped" and "pid" not in run.status
    assert "cannot be resumed here" in run.status["reason"] and run.status["checkpoint"] is False
    with pytest.raises(RuntimeError, match="imported from an archive, which holds no training state"):
        jobs.resume(name, tmp_path)
    assert load_run(tmp_path / name).state == "stopped"  # and nothing was started


def test_the_command_line_exports_and_imports(finished, tmp_path, capsys):
    out = tmp_path / "shared.run.zip"
    assert main(["--runs", str(finished.parent), "export", finished.name, "-o", str(out)]) == 0
    assert "python -m alexnet import shared.run.zip" in capsys.readouterr().out
    assert main(["--runs", str(tmp_path / "runs"), "import", str(out), "--name", "from-cli"]) == 0
    assert "imported as run from-cli" in capsys.readouterr().out
    assert main(["--runs", str(tmp_path / "runs"), "import", str(tmp_path / "absent.zip")]) == 2
    assert "cannot be read" in capsys.readouterr().err


class RunsCode:
    """Unpickling this creates `path`: what a planted pickle would do, harmlessly."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def link(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o120777 << 16  # a symbolic link, as `zip --symlinks` stores one
    return info, target.encode()


def lying_about_size(files: dict[str, bytes]) -> bytes:
    """metrics.jsonl declares half the bytes it holds, in its local header and in the central directory."""
    data = build(files)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo("metrics.jsonl")
    real, crc, patched, start = info.file_size, info.CRC.to_bytes(4, "little"), bytearray(data), 0
    while (at := patched.find(crc, start)) != -1:  # each header: CRC, compressed size, then the size
        if int.from_bytes(patched[at + 8:at + 12], "little") == real:
            patched[at + 8:at + 12] = (real // 2).to_bytes(4, "little")
        start = at + 1
    return bytes(patched)


HOSTILE = {
    "path traversal": (lambda f, t: build(f, extra=[(zipfile.ZipInfo("../escaped.json"), b"{}")]),
                       "would be written outside the run's folder"),
    "absolute path": (lambda f, t: build(f, extra=[(zipfile.ZipInfo(str(t / "escaped.json")), b"{}")]),
                      "would be written outside the run's folder"),
    "nested folder": (lambda f, t: build(f, extra=[(zipfile.ZipInfo("sub/config.json"), b"{}")]),
                      "is not a file of a run record"),
    "symbolic link": (lambda f, t: build({k: v for k, v in f.items() if k != "result.json"},
                                         extra=[link("result.json", "/etc/passwd")]), "is a symbolic link"),
    "a pickle beside the run": (lambda f, t: build(f, extra=[(zipfile.ZipInfo("state.pt"),
                                                              pickle.dumps(RunsCode(t / "ran")))]),
                                "'state.pt' is not a file of a run record"),
    "a pickle as the weights": (lambda f, t: build({**f, "weights.safetensors":
                                                    pickle.dumps({"w": RunsCode(t / "ran")})}),
                                "weights.safetensors is not a valid safetensors file"),
    "a zip bomb": (lambda f, t: build({**f, "metrics.jsonl": b"\n" * (8 << 20)}), r"times \(a zip bomb\)"),
    "an oversize file": (lambda f, t: build({**f, "config.json":
                                             json.dumps({"pad": os.urandom(700_000).hex()}).encode()}),
                         "would expand to 1.3 MB, over the 1 MB"),
    "a header that lies about the size": (lambda f, t: lying_about_size(f), "damaged|expands beyond"),
    "a file changed after export": (lambda f, t: build({**f, "config.json":
                                                        f["config.json"].replace(b'"bn"', b'"lrn"')}, listed=f),
                                    "not the file its manifest describes"),
    "a file its manifest does not list": (lambda f, t: build(f, listed={k: v for k, v in f.items()
                                                                        if k != "result.json"}),
                                          "are not those its manifest lists"),
    "a name twice": (lambda f, t: build(f, extra=[(zipfile.ZipInfo("config.json"), b"{}")]), "twice"),
    "not JSON": (lambda f, t: build({**f, "result.json": b"\x80 not json"}), "result.json is not valid JSON"),
    "weights of another variant": (lambda f, t: build({**f, "config.json": json.dumps(
        {**json.loads(f["config.json"]), "norm": "lrn"}).encode()}), "do not fit the cifar variant with norm lrn"),
    "no manifest": (lambda f, t: _without_manifest(f), "lacks manifest.json"),
    "not a zip": (lambda f, t: b"PK\x03\x04 not really a zip" + os.urandom(100), "not a zip archive"),
}


def _without_manifest(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_archive_is_refused_with_a_message_and_nothing_written(case, finished, tmp_path):
    make, message = HOSTILE[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    data = make(files_of(finished), outside)
    root = tmp_path / "runs"
    RunWriter.create(root, "already-here", {"variant": "cifar"})
    before = snapshot(root)
    with pytest.raises(archive.ArchiveError, match=message):
        archive.import_run(data, root, filename="hostile.run.zip")
    assert snapshot(root) == before  # no run, no staging folder, nothing half-written
    assert os.listdir(outside) == [] and not (tmp_path / "escaped.json").exists()  # and nothing ran or escaped


def test_oversize_archives_are_refused_before_they_are_read(finished, tmp_path):
    with pytest.raises(archive.ArchiveError, match=r"is 26,214,401 bytes, over the 25 MB \(26,214,400 bytes\) allowed "
                                                   r"\(the app's upload limit\): import it with `python -m alexnet "
                                                   r"import FILE`"):
        archive.import_run(os.urandom(archive.APP_LIMIT + 1), tmp_path)
    small = archive.export_run(finished)
    with pytest.raises(archive.ArchiveError, match=f"is {len(small):,} bytes, over the .* MB \\({len(small) - 1:,} "
                                                   "bytes\\) allowed$"):
        archive.import_run(small, tmp_path, limit=len(small) - 1)
    with pytest.raises(archive.ArchiveError, match="empty file"):
        archive.import_run(b"", tmp_path)
    assert os.listdir(tmp_path) == []
