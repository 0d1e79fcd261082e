"""Loading weights from files a user hands over: no code runs, and every bad file gets a message naming the problem.

The hostile files are built here: pickles whose loading would run code (a class whose __reduce__
writes a marker file), checkpoints of another variant or shape, truncated, compressed, damaged or
not checkpoints at all. Each goes through `read_state_dict` and `load_model` as the pages use them.
"""
from __future__ import annotations

import builtins
import io
import json
import pickle
import random
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from alexnet.checkpoints import load_model
from alexnet.config import TrainConfig
from alexnet.models import build
from alexnet.runs import RunWriter, load_run
from alexnet.train import train
from alexnet.weight_files import CheckpointError, load_state, read_state_dict, save_weights

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's notice on odd pickles


class Planted:
    """Unpickling this runs `exec`, which writes a marker file: the proof that a loader ran the file's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def torch_zip(obj, path: Path) -> None:
    torch.save(obj, path)


def torch_legacy(obj, path: Path) -> None:
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def raw_pickle(obj, path: Path) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=4))


def ascii_pickle(obj, path: Path) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=0))


@pytest.fixture(scope="module")
def cifar_bn():
    torch.manual_seed(0)
    return build("cifar", "bn", init="torch").eval()


HOSTILE = [
    ("model.pt", torch_zip, "bare"),                 # what torch.save writes today
    ("model.pth", torch_legacy, "bare"),             # the format before PyTorch 1.6
    ("weights.pt", torch_zip, "inside a state_dict"),
    ("checkpoint.pth", torch_legacy, "inside a state_dict"),
    ("plain.pt", raw_pickle, "bare"),                # a pickle that is not a torch file at all
    ("old.ckpt", ascii_pickle, "bare"),
    ("no-suffix", raw_pickle, "bare"),
]


@pytest.mark.parametrize("filename, write, where", HOSTILE)
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(filename, write, where, tmp_path, cifar_bn):
    marker = tmp_path / "marker"
    planted = Planted(marker)
    payload = planted if where == "bare" else {"model": {**cifar_bn.state_dict(), "extra": planted}}
    path = tmp_path / filename
    write(payload, path)
    for loader in (read_state_dict, load_model):
        with pytest.raises(CheckpointError) as refused:
            loader(path)
        assert refused.value.args[0].startswith(f"{filename} ")             # the message names the file
        assert "refused" in str(refused.value) or "not a PyTorch checkpoint" in str(refused.value)
        assert not marker.exists(), f"{loader.__name__} ran the file's code"

    # The file is truly hostile: an unsafe loader runs its code.
    if write in (raw_pickle, ascii_pickle):
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def test_the_refusal_says_why_and_what_to_do(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"net": Planted(tmp_path / "marker")}, path)
    with pytest.raises(CheckpointError, match=r"model.pt was refused: it contains Python objects other than weights, "
                                              r"which could run code when loaded. Save the model's state_dict\(\)"):
        read_state_dict(path)


def test_a_planted_resume_state_is_refused_and_the_run_fails_saying_so(tmp_path):
    marker = tmp_path / "marker"
    config = TrainConfig(epochs=1, max_train_images=24, batch_size=12, threads=1)
    folder = RunWriter.create(tmp_path, "planted", config.to_dict()).path
    torch.save({"model": {}, "position": Planted(marker)}, folder / "state.pt")
    with pytest.raises(CheckpointError, match="the resume state .*state.pt cannot be read"):
        load_state(folder / "state.pt")
    with pytest.raises(CheckpointError):
        train(config, folder, resume=True)
    assert not marker.exists()
    run = load_run(folder)
    assert run.state == "failed" and "the resume state" in run.status["reason"]


# ---- files that are checkpoints, but not of this model ----

def test_a_checkpoint_of_another_variant_names_the_variant_it_fits(tmp_path, cifar_bn):
    path = tmp_path / "mine.safetensors"
    save_weights(path, cifar_bn)
    with pytest.raises(CheckpointError) as err:
        load_model(path, variant="paper")
    message = str(err.value)
    assert message.startswith("mine.safetensors does not fit the paper variant with norm=bn: wrong shapes: "
                              "features.0.weight: file (64, 3, 5, 5) vs model (96, 3, 11, 11)")
    assert message.endswith("It looks like the cifar variant with norm=bn.")


def test_a_checkpoint_of_another_norm_names_the_missing_layers(tmp_path):
    path = tmp_path / "lrn.pt"
    torch.save(build("cifar", "lrn", init="torch").state_dict(), path)
    assert (load_model(path).variant, load_model(path).norm) == ("cifar", "lrn")        # found from its shapes
    with pytest.raises(CheckpointError, match=r"lrn.pt does not fit the cifar variant with norm=bn: missing: "
                                              r"features.2.weight, .*It looks like the cifar variant with norm=lrn"):
        load_model(path, "cifar", "bn")


def test_a_fine_tuned_imagenet_model_is_detected_and_the_original_is_sent_to_its_own_entry(tmp_path):
    tuned = tmp_path / "tuned.safetensors"
    save_file({k: v.half().contiguous() for k, v in build("imagenet", "none", init="torch").state_dict().items()},
              str(tuned))
    assert load_model(tuned).variant == "imagenet"                                        # found from its shapes
    with pytest.raises(CheckpointError, match="the imagenet variant has no bn layers: choose norm none, or detect"):
        load_model(tuned, "imagenet", "bn")
    with pytest.raises(CheckpointError, match=r"tuned.safetensors does not fit the cifar variant with norm=none: "
                                              r"wrong shapes: .* It looks like the imagenet variant with norm=none"):
        load_model(tuned, variant="cifar")
    original = tmp_path / "alexnet-owt-7be5be79.pth"                                     # torchvision's 1000 classes
    torch.save({k: torch.zeros(v.shape, dtype=torch.float16)
                for k, v in build("imagenet", "none", num_classes=1000, init="torch").state_dict().items()}, original)
    with pytest.raises(CheckpointError, match=r"alexnet-owt-7be5be79.pth is torchvision's ImageNet AlexNet \(1000 "
                                              r"classes\), not a CIFAR-10 model: pick the ImageNet model"):
        load_model(original)


def test_wrong_shapes_are_named_layer_by_layer(tmp_path):
    path = tmp_path / "hundred.pt"
    torch.save(build("cifar", "bn", num_classes=100, init="torch").state_dict(), path)
    with pytest.raises(CheckpointError, match="hundred.pt fits none of the variants"):
        load_model(path)
    with pytest.raises(CheckpointError, match=r"wrong shapes: classifier.6.weight: file \(100, 512\) vs model "
                                              r"\(10, 512\); classifier.6.bias: file \(100,\) vs model \(10,\)"):
        load_model(path, "cifar", "bn")


def test_metadata_that_lies_is_not_trusted(tmp_path, cifar_bn):
    """A file's metadata naming an unknown variant or no norm: the shapes decide, and nothing crashes."""
    tensors = {k: v.contiguous() for k, v in cifar_bn.state_dict().items()}
    for name, meta in (("vgg", {"variant": "vgg", "norm": "bn"}), ("no-norm", {"variant": "cifar"}),
                       ("empty", {"variant": "", "norm": ""})):
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        model = load_model(path)
        assert (model.variant, model.norm) == ("cifar", "bn"), name
    save_file({"x": torch.zeros(3)}, str(tmp_path / "small.safetensors"), metadata={"variant": "vgg", "norm": "x"})
    with pytest.raises(CheckpointError, match="small.safetensors fits none of the variants"):
        load_model(tmp_path / "small.safetensors")


def test_weights_that_are_not_numbers_are_refused(tmp_path, cifar_bn):
    state = dict(cifar_bn.state_dict())
    state["classifier.6.bias"] = torch.full((10,), float("nan"))
    torch.save(state, tmp_path / "diverged.pt")
    with pytest.raises(CheckpointError, match="diverged.pt holds weights that are not finite numbers .* "
                                              "classifier.6.bias"):
        load_model(tmp_path / "diverged.pt")


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
@pytest.mark.parametrize("kind", ["sparse", "complex", "meta", "integer keys"])
def test_tensors_that_are_not_plain_weights_are_refused(kind, tmp_path, cifar_bn):
    state = dict(cifar_bn.state_dict())
    weight = state["classifier.6.weight"]
    if kind == "sparse":
        state["classifier.6.weight"] = weight.to_sparse()
    elif kind == "complex":
        state["classifier.6.weight"] = weight.to(torch.complex64)
    elif kind == "meta":
        state["classifier.6.weight"] = torch.empty(weight.shape, device="meta")
    else:
        state[6] = weight
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="odd.pt holds"):
        load_model(tmp_path / "odd.pt", "cifar", "bn")


# ---- files that are not (whole) checkpoints ----

@pytest.fixture(scope="module")
def valid_files(cifar_bn, tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("valid")
    save_weights(folder / "w.safetensors", cifar_bn)
    torch.save(cifar_bn.state_dict(), folder / "w.pt")
    torch.save(cifar_bn.state_dict(), folder / "w.pth", _use_new_zipfile_serialization=False)
    return {p.suffix: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
@pytest.mark.parametrize("fraction", [0.001, 0.5, 0.999])
def test_a_truncated_checkpoint_says_so(suffix, fraction, valid_files, tmp_path):
    data = valid_files[suffix]
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    message = str(err.value)
    assert message.startswith(f"cut{suffix} ")
    assert any(words in message for words in ("not a valid safetensors file", "truncated", "damaged",
                                              "not a PyTorch checkpoint")), message


NOT_CHECKPOINTS = [
    ("empty.pt", b"", "empty.pt is empty or missing"),
    ("notes.pt", b"these are my notes, not weights\n" * 20, "notes.pt is not a checkpoint that can be read"),
    ("cat.pth", (Path(__file__).parent.parent / "assets" / "examples" / "chelsea.png").read_bytes(),
     "cat.pth is not a PyTorch checkpoint"),
    ("config.safetensors", json.dumps({"variant": "cifar"}).encode(), "config.safetensors is not a valid safetensors"),
    ("random.bin", random.Random(3).randbytes(4096), "random.bin"),
]


@pytest.mark.parametrize("name, data, message", NOT_CHECKPOINTS, ids=[n for n, _, _ in NOT_CHECKPOINTS])
def test_a_file_that_is_not_a_checkpoint_says_so(name, data, message, tmp_path):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path / name)


@pytest.mark.parametrize("obj, name", [([torch.zeros(2)], "list.pt"), ({"model": 5}, "five.pt"), ({}, "none.pt"),
                                        ({"model": {"w": "text"}}, "text.pt")])
def test_a_torch_file_without_weights_says_so(obj, name, tmp_path):
    torch.save(obj, tmp_path / name)
    with pytest.raises(CheckpointError, match=f"{name} holds no weights"):
        load_model(tmp_path / name)


def test_a_compressed_archive_is_refused_before_it_expands(tmp_path):
    """1 GB of zeros deflates to 1 MB: torch would decompress it all into memory; we refuse to open it."""
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2_000_000)}, buffer)
    plain = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as packed:
        for entry in plain.infolist():
            packed.writestr(entry.filename, plain.read(entry.filename))
    assert path.stat().st_size < 100_000
    assert torch.load(path, weights_only=True)["w"].numel() == 2_000_000    # torch itself would expand it
    with pytest.raises(CheckpointError, match="bomb.pt was refused: it holds compressed entries"):
        read_state_dict(path)


def test_damaged_files_of_every_kind_get_a_checkpoint_error_and_nothing_else(tmp_path, valid_files):
    """Random bytes, cut files and files with flipped bytes: torch.load raises KeyError, IndexError,
    AssertionError... on such input; each must become a message, or load (a flipped weight is still a weight)."""
    rng = random.Random(11)
    small = {}
    for suffix, save in ((".pt", torch_zip), (".pth", torch_legacy)):
        torch.manual_seed(0)
        save({"a.weight": torch.randn(4, 3), "a.bias": torch.randn(4)}, tmp_path / f"small{suffix}")
        small[suffix] = (tmp_path / f"small{suffix}").read_bytes()
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(300):
        suffix = (".pt", ".pth")[i % 2]
        data = bytearray(small[suffix])
        if i % 3 == 0:
            data = bytearray(rng.randbytes(rng.randint(1, 2000)))
        elif i % 3 == 1:
            data = data[:rng.randrange(len(data))]
        for _ in range(rng.randint(1, 8)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / f"fuzz{suffix}"
        path.write_bytes(bytes(data))
        try:
            read_state_dict(path)
            outcomes["loaded"] += 1
        except CheckpointError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 200, outcomes


def test_refusals_are_quick(tmp_path, valid_files):
    """A refused upload costs the server milliseconds, not a load of the whole file."""
    path = tmp_path / "m.pt"
    torch.save({"state": Planted(tmp_path / "marker")}, path)
    start = time.perf_counter()
    for _ in range(20):
        with pytest.raises(CheckpointError):
            read_state_dict(path)
    assert time.perf_counter() - start < 2.0
