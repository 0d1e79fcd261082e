"""The app under hostile input and faults, through Streamlit's AppTest on the real pages.

- Predict: each bad image gets its own st.error and the page goes on to classify a good one;
  each odd but valid image gets the library's own answer; a checkpoint upload that would run
  code, does not fit, or is not a checkpoint gets a message, runs nothing, and writes nothing
  outside the upload folder whatever its name.
- Train: out-of-range values and names are refused before anything starts (the form and
  `jobs.start`); a run that failed (NaN, out of memory, no dataset, full disk) shows why;
  a restarted app finds a training run and, after kill -9, shows it stopped, not running.
- The server's upload limit (.streamlit/config.toml) is the library's.
"""
from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from alexnet import images, jobs
from alexnet import runs as run_records
from alexnet.checkpoints import load_model
from alexnet.config import TrainConfig
from alexnet.images import load_image
from alexnet.models import build
from alexnet.predict import DEMO_WEIGHTS, EXAMPLES_DIR, predict
from alexnet.train import train
from alexnet.weight_files import save_weights
from pages._shared import model_picker
from conftest import open_app_page
from test_checkpoints import Planted

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_WEIGHTS)


@pytest.fixture
def env(runs_dir, mini_dir, monkeypatch, tmp_path):
    """A fresh runs folder, the mini subset, and uploads kept under this test's own temporary folder."""
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return runs_dir


def metric(at: AppTest, label: str) -> list[str]:
    return [m.value for m in at.metric if m.label == label]


def image_captions(at: AppTest) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(size=(96, 64), seed=0) -> Image.Image:
    """A smooth picture (gradients, not noise), so resampling and formats keep it recognisable."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    rgb = np.stack([(x * rng.uniform(1, 3) + y) % 256, (y * rng.uniform(1, 3)) % 256, (x + 2 * y) % 256], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def png_bomb(width: int, height: int) -> bytes:
    """A 1-bit PNG announcing width x height pixels in a few kB (Pillow writes it row by row, lazily)."""
    return encode(Image.new("1", (width, height)), "PNG")


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[274] = 6                                     # orientation: rotate 90 degrees clockwise to view
    return encode(photo((120, 60), 3), "JPEG", exif=exif.tobytes())


def animated(fmt: str) -> bytes:
    frames = [photo((64, 48), i) for i in range(3)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def palette_with_transparency() -> bytes:
    img = photo((50, 50), 4).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    return encode(img, "PNG", transparency=0)


def rgba() -> bytes:
    img = photo((70, 50), 5).convert("RGBA")
    img.putalpha(Image.linear_gradient("L").resize((70, 50)))
    return encode(img, "PNG")


BAD_IMAGES = [
    ("empty.png", lambda: b"", "empty.png is an empty file"),
    ("notes.jpg", lambda: b"these are notes, not a photo\n" * 10, "notes.jpg is not an image"),
    ("noise.png", lambda: np.random.default_rng(1).bytes(20_000), "noise.png is not an image"),
    ("page.png", lambda: b"<html><body><script>alert(1)</script></body></html>", "page.png is not an image"),
    ("half.png", lambda: encode(photo((256, 256)), "PNG")[:2000], "half.png is truncated"),
    ("half.jpg", lambda: encode(photo((256, 256)), "JPEG")[:1500], "half.jpg is truncated"),
    ("bomb.png", lambda: png_bomb(30_000, 30_000), "bomb.png is far too large"),
    ("big.png", lambda: png_bomb(8_000, 6_000), "big.png is 8000x6000 = 48 megapixels"),
    ("text-bomb.png", lambda: encode(photo(), "PNG", pnginfo=_text_bomb()), "text-bomb.png is damaged or unsupported"),
]


def _text_bomb():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "0" * 20_000_000, zip=True)   # 20 MB of text in a 20 kB compressed chunk
    return info


ODD_IMAGES = [
    ("dot.png", lambda: encode(Image.new("RGB", (1, 1), (200, 40, 40)), "PNG")),
    ("strip.png", lambda: encode(photo((3000, 2)), "PNG")),
    ("tower.png", lambda: encode(photo((2, 3000)), "PNG")),
    ("deep.png", lambda: encode(Image.fromarray((np.mgrid[0:40, 0:60][1] * 1000).astype(np.uint16)), "PNG")),
    ("palette.png", palette_with_transparency),
    ("print.jpg", lambda: encode(photo((80, 60), 6).convert("CMYK"), "JPEG")),
    ("glass.png", rgba),
    ("moving.gif", lambda: animated("GIF")),
    ("moving.webp", lambda: animated("WEBP")),
    ("moving.png", lambda: animated("PNG")),
    ("phone.jpg", exif_rotated),
    ("float.tif", lambda: encode(Image.fromarray(np.linspace(-5, 5, 900, dtype=np.float32).reshape(30, 30)), "TIFF")),
]


# ---------------------------------------------------------------- Predict: images

@pytest.fixture
def predict_upload(env):
    at = open_app_page("pages/predict.py")
    at.radio(key="predict_source").set_value("Upload").run()
    return at


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="predict_upload").set_value([(name, data, "application/octet-stream")]).run()
    assert not at.exception, at.exception
    return at


def test_each_bad_image_gets_a_message_and_the_page_goes_on_working(predict_upload, demo):
    at = predict_upload
    good = (EXAMPLES_DIR / "chelsea.png").read_bytes()
    expected = predict(demo, load_image(good))
    for name, make, message in BAD_IMAGES:
        upload(at, name, make())
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and errors[0].startswith(message), (name, errors)
        assert not metric(at, "Predicted"), name                              # no answer for a bad file
        upload(at, "cat.png", good)
        assert not at.error, (name, [e.value for e in at.error])
        assert metric(at, "Predicted") == [expected.label], f"after {name}"
        assert metric(at, "Top probability") == [f"{expected.confidence:.1%}"]


def test_odd_but_valid_images_get_the_librarys_own_answer(predict_upload, demo):
    at = predict_upload
    for name, make in ODD_IMAGES:
        data = make()
        upload(at, name, data)
        assert not at.error, (name, [e.value for e in at.error])
        decoded = load_image(data, name)
        expected = predict(demo, decoded)
        assert metric(at, "Predicted") == [expected.label], name
        assert metric(at, "Top probability") == [f"{expected.confidence:.1%}"], name
        width, height = decoded.size
        assert f"your image ({width}x{height}, centre crop)" in image_captions(at), name
    assert load_image(exif_rotated()).size == (60, 120)                   # the photo as the phone showed it


def test_hostile_file_names_are_only_shown_never_used_as_paths(predict_upload, demo, tmp_path):
    at = predict_upload
    data = encode(photo(), "PNG")
    names = ["../../../../etc/passwd.png", "/tmp/evil.png", "<img src=x onerror=alert(1)>.png",
             "**bold** [link](javascript:alert(1)).png", "a\nb.png", "x" * 300 + ".png"]
    before = set(Path(tempfile.gettempdir()).rglob("*"))
    for name in names:
        upload(at, name, data)
        assert not at.error
        assert metric(at, "Predicted") == [predict(demo, load_image(data)).label]
    upload(at, "../../../../etc/passwd.png", b"not an image")
    assert at.error[0].value.startswith("../../../../etc/passwd.png is not an image")
    assert set(Path(tempfile.gettempdir()).rglob("*")) == before           # uploads of images are never written


# ---------------------------------------------------------------- Predict: checkpoints

def upload_checkpoint(at: AppTest, name: str, data: bytes) -> list[str]:
    at.file_uploader(key="predict_model_file").set_value((name, data, "application/octet-stream")).run()
    assert not at.exception, at.exception
    return [e.value for e in at.error]


def test_checkpoint_uploads_that_would_run_code_or_do_not_fit_get_a_message(env, tmp_path, demo):
    marker = tmp_path / "marker"
    at = open_app_page("pages/predict.py")
    at.selectbox(key="predict_model").select(model_picker.UPLOAD_CHECKPOINT).run()

    planted = tmp_path / "planted.pt"
    torch.save({"model": {**demo.state_dict(), "extra": Planted(marker)}}, planted)
    legacy = tmp_path / "planted.pth"
    torch.save(Planted(marker), legacy, _use_new_zipfile_serialization=False)
    for path in (planted, legacy):
        errors = upload_checkpoint(at, path.name, path.read_bytes())
        assert any(e.startswith(f"{path.name} was refused: it contains Python objects other than weights")
                   for e in errors), errors
        assert not marker.exists() and not metric(at, "Predicted")

    lrn = tmp_path / "lrn.pt"
    torch.save(build("cifar", "lrn", init="torch").state_dict(), lrn)
    at.selectbox(key="predict_model_norm").select("bn").run()
    errors = upload_checkpoint(at, "lrn.pt", lrn.read_bytes())
    assert any("does not fit the cifar variant with norm=bn: missing: features.2.weight" in e
               and "It looks like the cifar variant with norm=lrn" in e for e in errors), errors
    at.selectbox(key="predict_model_norm").select("detect").run()
    assert not at.error and metric(at, "Predicted")                          # detected from its shapes

    weights = DEMO_WEIGHTS.read_bytes()
    at.selectbox(key="predict_model_variant").select("imagenet").run()       # a variant without that norm
    for norm, message in [("detect", "demo.safetensors does not fit the imagenet variant: its layers are those of "
                                     "the cifar variant with norm=bn"),
                          ("bn", "the imagenet variant has no bn layers: choose norm none, or detect")]:
        at.selectbox(key="predict_model_norm").select(norm).run()
        errors = upload_checkpoint(at, "demo.safetensors", weights)
        assert not at.exception and any(e.startswith(message) for e in errors), (norm, errors)
    at.selectbox(key="predict_model_variant").select("detect").run()
    at.selectbox(key="predict_model_norm").select("detect").run()

    for name, data, message in [
        ("cut.safetensors", weights[:len(weights) // 2], "cut.safetensors is not a valid safetensors file"),
        ("notes.pt", b"my notes\n" * 50, "notes.pt is not a"),
        ("photo.pth", (EXAMPLES_DIR / "chelsea.png").read_bytes(), "photo.pth is not a PyTorch checkpoint"),
        ("empty.pt", b"", "empty.pt is empty or missing"),
    ]:
        errors = upload_checkpoint(at, name, data)
        assert any(e.startswith(message) for e in errors), (name, errors)
        assert not metric(at, "Predicted")

    assert not upload_checkpoint(at, "fine.safetensors", weights)            # and a good one still works
    assert metric(at, "Predicted") == [predict(demo, load_image(EXAMPLES_DIR / "chelsea.png")).label]


def test_checkpoint_upload_names_stay_inside_the_upload_folder(env, demo, tmp_path):
    at = open_app_page("pages/predict.py")
    at.selectbox(key="predict_model").select(model_picker.UPLOAD_CHECKPOINT).run()
    uploads = Path(tempfile.gettempdir()) / "alexnet-lab-uploads"
    expected = predict(demo, load_image(EXAMPLES_DIR / "chelsea.png")).label
    for n, name in enumerate(["../../../../tmp/owned.safetensors", "/etc/cron.d/x.safetensors", "..safetensors",
                              "a\x00b.safetensors", "é" * 200 + ".safetensors", ".safetensors"]):
        save_weights(tmp_path / "w.safetensors", demo, {"copy": n})            # the same weights, new bytes
        assert not upload_checkpoint(at, name, (tmp_path / "w.safetensors").read_bytes()), name
        assert metric(at, "Predicted") == [expected], name
    written = [p for p in Path(tempfile.gettempdir()).rglob("*") if p.is_file()]
    assert written and all(p.parent.parent == uploads for p in written), written
    assert all(len(p.name) < 100 and ".." not in p.name for p in written)


# ---------------------------------------------------------------- Train: refusals before anything starts

@pytest.mark.parametrize("bad, name, message", [
    (dict(batch_size=0), "a", "batch size must be 1 to 8192, got 0"),
    (dict(lr=-0.1), "a", r"learning rate must be in \(0, 10\], got -0.1"),
    (dict(epochs=10**9), "a", "epochs must be 1 to 1000, got 1000000000"),
    (dict(variant="vgg"), "a", "variant 'vgg' is unknown"),
    ({}, "../outside", "invalid run name"),
    ({}, "/tmp/absolute", "invalid run name"),
])
def test_jobs_start_refuses_before_creating_anything(bad, name, message, runs_dir):
    with pytest.raises(ValueError, match=message):
        jobs.start(TrainConfig(**bad), name, runs_dir)
    assert list(runs_dir.iterdir()) == [] and not (runs_dir.parent / "outside").exists()


def test_the_form_refuses_out_of_range_values_and_names_and_starts_nothing(env):
    at = open_app_page("pages/train.py")
    at.toggle(key="train.advanced").set_value(True).run()

    def problems() -> str:
        return " ".join(e.value for e in at.error)

    at.number_input(key="train.epochs").set_value(10**9).run()
    assert "epochs must be 1 to 1000, got 1000000000" in problems()
    at.number_input(key="train.batch_size").set_value(100_000).run()
    assert "batch size must be 1 to 8192, got 100000" in problems()
    at.number_input(key="train.batch_size").set_value(0).run()              # the widget's floor: 1
    assert at.number_input(key="train.batch_size").value == 1
    at.number_input(key="train.lr").set_value(-0.1).run()                   # the floor 0 is still refused
    assert "learning rate must be in (0, 10], got 0.0" in problems()
    at.text_input(key="train.name").set_value("../../outside").run()
    assert "invalid run name '../../outside'" in problems()
    assert at.button(key="train.start").disabled
    assert list(env.iterdir()) == [] and not (env.parent.parent / "outside").exists()

    at.number_input(key="train.epochs").set_value(1).run()
    at.number_input(key="train.batch_size").set_value(64).run()
    at.number_input(key="train.lr").set_value(0.01).run()
    at.text_input(key="train.name").set_value("fine-name").run()
    assert not at.error and not at.button(key="train.start").disabled      # the refusals were about those values


def test_a_runs_folder_that_is_a_file_is_named_on_the_page(env, monkeypatch, tmp_path):
    blocked = tmp_path / "runs-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("ALEXNET_RUNS", str(blocked))
    at = open_app_page("pages/train.py")
    at.number_input(key="train.epochs").set_value(1).run()
    at.button(key="train.start").click().run()
    assert not at.exception
    assert any(f"Not started: the runs folder {blocked} is a file, not a folder" in e.value for e in at.error)


# ---------------------------------------------------------------- Train: why a run failed

def faulty_build(kind: str, at_call: int):
    """models.build whose model, at its `at_call`-th training forward pass, gives NaN or runs out of memory."""
    import alexnet.train as training

    real = training.build

    def build_with_a_fault(*args, **kwargs):
        model, calls = real(*args, **kwargs), [0]

        def hook(module, inputs, output):
            if module.training:
                calls[0] += 1
                if calls[0] == at_call:
                    if kind == "oom":
                        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
                    return output * float("nan")
        model.register_forward_hook(hook)
        return model
    return build_with_a_fault


def test_the_train_page_shows_why_each_run_failed_and_keeps_serving(env, slice_dir, monkeypatch, tmp_path,
                                                                    one_thread):
    import alexnet.train as training

    config = dict(batch_size=6, val_fraction=0.1, log_every=1, epochs=2, threads=1, optimizer="adam", lr=0.001,
                  data_dir=str(slice_dir))
    reasons = {}
    for name, changes, fault in [("nan", {}, "nan"), ("oom", {}, "oom"),
                                 ("no-data", {"data_dir": str(tmp_path / "gone")}, None), ("full-disk", {}, "disk")]:
        cfg = TrainConfig(**{**config, **changes})
        folder = run_records.RunWriter.create(env, name, cfg.to_dict()).path
        with monkeypatch.context() as patch:
            if fault in ("nan", "oom"):
                patch.setattr(training, "build", faulty_build(fault, 3))
            if fault == "disk":
                def no_space(obj, path, *a, **k):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                patch.setattr(torch, "save", no_space)
            with pytest.raises(Exception):
                train(cfg, folder)
        run = run_records.load_run(folder)
        assert run.state == "failed"
        reasons[name] = run.status["reason"]
    assert reasons["nan"].startswith("the loss became nan at step 3 (epoch 1): lower the learning rate")
    assert reasons["oom"].startswith("the device ran out of memory (CUDA out of memory.")
    assert f"the dataset folder {tmp_path / 'gone'} does not exist" in reasons["no-data"]
    assert "cannot write the checkpoint" in reasons["full-disk"] and "No space left on device" in reasons["full-disk"]

    at = open_app_page("pages/train.py")
    for name, reason in reasons.items():
        at.selectbox(key="train.run").set_value(name).run()
        assert not at.exception
        assert [e.value for e in at.error] == [f"**failed**: {reason}"], name
        assert at.button(key="train.resume").disabled                        # none got to a checkpoint
    table = at.dataframe[0].value.set_index("run")
    assert {name: table.loc[name, "message"] for name in reasons} == reasons
    at.number_input(key="train.epochs").set_value(1).run()                  # the app goes on serving the form
    assert not at.button(key="train.start").disabled


# ---------------------------------------------------------------- Train: the app restarts while a run trains

@pytest.fixture
def started_job(env, slice_dir):
    """A real training process started as the Train page starts one (long enough to outlive the checks)."""
    config = TrainConfig(batch_size=6, val_fraction=0.1, log_every=1, epochs=200, threads=1, optimizer="adam",
                         lr=0.001, data_dir=str(slice_dir))
    name = jobs.start(config, "long", env)
    yield name
    pid = run_records.read_json(env / name / "status.json", {}).get("pid")
    if run_records.pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_a_restarted_app_finds_the_training_run_and_its_true_state_after_kill_9(env, started_job):
    folder = env / started_job
    deadline = time.monotonic() + 120
    while not (folder / "state.pt").exists():                              # running, past its first checkpoint
        assert time.monotonic() < deadline, run_records.load_run(folder).status
        time.sleep(0.2)
    at = open_app_page("pages/train.py")                                    # a new server process's first view
    assert at.selectbox(key="train.run").value == started_job
    assert [i.value for i in at.info if i.value.startswith("**running**")], [i.value for i in at.info]
    assert at.button(key="train.stop").disabled is False

    pid = run_records.load_run(folder).status["pid"]
    os.kill(pid, signal.SIGKILL)
    while run_records.pid_alive(pid):
        time.sleep(0.05)
    at = open_app_page("pages/train.py")                                    # restarted again, after the kill
    assert not [i.value for i in at.info if i.value.startswith("**running**")]
    stopped = [w.value for w in at.warning if w.value.startswith("**stopped**")]
    assert stopped and "ended without saying why (killed or crashed); resume continues from the last checkpoint" \
        in stopped[0]
    assert at.button(key="train.stop").disabled and not at.button(key="train.resume").disabled
    assert at.dataframe[0].value.set_index("run").loc[started_job, "state"] == "stopped"

    at.button(key="train.resume").click().run()                             # and it carries on from there
    resumed = run_records.load_run(folder).status["pid"]
    assert resumed != pid
    while run_records.load_run(folder).state != "running":
        assert run_records.pid_alive(resumed) and time.monotonic() < deadline + 120, (folder / "log.txt").read_text()
        time.sleep(0.2)
    assert jobs.stop(started_job, env)
    assert jobs.wait(started_job, env, timeout=120) == "stopped"


# ---------------------------------------------------------------- the server's own settings

def test_the_upload_limit_is_the_librarys_and_streamlit_reads_it():
    """.streamlit/config.toml as Streamlit itself reads it when started from the repository (no forced full
    garbage collection after each rerun: it cost the server 0.17 s a rerun)."""
    options = ["server.maxUploadSize", "server.address", "server.enableXsrfProtection", "server.enableCORS",
               "runner.postScriptGC"]
    shown = subprocess.run([sys.executable, "-c", "from streamlit import config; "
                            f"print(*[config.get_option(o) for o in {options!r}])"],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert shown.stdout.split() == [str(images.MAX_BYTES // 2**20), "localhost", "True", "True", "False"], \
        shown.stderr
