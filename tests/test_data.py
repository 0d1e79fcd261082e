"""Dataset resolution, safe reading of CIFAR batches, the embedded sample, and batch augmentation."""
import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from alexnet import data
from alexnet.data import Augment, DatasetMissing, augment_batch, load_cifar10, resolve_dataset, split_validation


def write_tiny_cifar(folder, per_batch=7, test=5):
    """A tiny dataset in the official python-batch layout (random pixels: for shapes only)."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        with open(batches / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": list(rng.integers(0, 10, n)), "batch_label": name, "filenames": []}, f)
    return folder


@pytest.fixture
def no_usual_places(monkeypatch, tmp_path):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "usual_places", lambda: [tmp_path / "nowhere"])


def test_the_mini_subset_is_read_as_a_subset(mini_dir, mini_data):
    source = resolve_dataset(mini_dir)
    assert source.kind == "subset" and source.label == "CIFAR-10 subset (6,102 images)"
    assert mini_data.train_x.shape == (5085, 3, 32, 32) and mini_data.train_x.dtype == torch.uint8
    assert mini_data.test_x.shape == (1017, 3, 32, 32)
    assert mini_data.classes[0] == "airplane" and int(mini_data.train_y.max()) == 9
    # The batches folder itself works as well as its parent
    assert resolve_dataset(mini_dir / "cifar-10-batches-py").path == source.path


def test_with_nothing_configured_and_offline_the_embedded_sample_is_used(no_usual_places):
    source = resolve_dataset()
    assert source.kind == "sample" and source.label.startswith("embedded sample")
    sample = load_cifar10(source)
    assert sample.train_x.shape == (2000, 3, 32, 32) and len(sample.test_x) == source.test_count
    assert torch.bincount(sample.train_y).tolist() == [200] * 10


def test_the_sample_holds_the_exact_pixels_of_the_real_images(mini_data, no_usual_places):
    info = json.loads((data.SAMPLE_DIR / "sample.json").read_text())
    sample = load_cifar10(resolve_dataset())
    assert torch.equal(sample.train_x, mini_data.train_x[info["train_indices"]])
    assert torch.equal(sample.test_y, mini_data.test_y[info["test_indices"]])
    assert sum(p.stat().st_size for p in data.SAMPLE_DIR.iterdir()) < 6_000_000


def test_the_sample_command_remakes_the_shipped_sample(mini_dir, tmp_path, capsys):
    """`python -m alexnet sample` on the mini subset gives the committed files again: pixels, labels, indices."""
    from PIL import Image

    from alexnet.cli import main

    remade = tmp_path / "remade"
    assert main(["sample", "--from", str(mini_dir), "--out", str(remade)]) == 0
    assert str(remade) in capsys.readouterr().out
    assert json.loads((remade / "sample.json").read_text()) == json.loads((data.SAMPLE_DIR / "sample.json").read_text())
    for mosaic in ("train.webp", "test.webp"):
        with Image.open(remade / mosaic) as new, Image.open(data.SAMPLE_DIR / mosaic) as shipped:
            assert np.array_equal(np.asarray(new.convert("RGB")), np.asarray(shipped.convert("RGB"))), mosaic


def test_a_full_cifar10_in_a_usual_place_beats_the_sample_and_a_subset_there_does_not(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "FULL_TRAIN", 5 * 7)  # the size of write_tiny_cifar's folders stands in for 50,000
    monkeypatch.setattr(data, "FULL_TEST", 5)
    subset = write_tiny_cifar(tmp_path / "subset", per_batch=3)
    full = write_tiny_cifar(tmp_path / "full")
    monkeypatch.setattr(data, "usual_places", lambda: [subset, tmp_path / "empty", full])
    source = resolve_dataset()
    assert source.kind == "cifar10" and source.label == "CIFAR-10" and source.path == full / data.BATCHES
    monkeypatch.setattr(data, "usual_places", lambda: [subset])
    assert resolve_dataset().kind == "sample"


def test_a_named_folder_wins_over_the_sample_and_the_environment(tmp_path, monkeypatch, no_usual_places):
    tiny = write_tiny_cifar(tmp_path / "tiny")
    monkeypatch.setenv(data.ENV_VAR, str(tiny))
    assert resolve_dataset().path == tiny / "cifar-10-batches-py"
    other = write_tiny_cifar(tmp_path / "other", per_batch=3)
    source = resolve_dataset(other)
    assert source.train_count == 15 and source.test_count == 5 and source.kind == "subset"


def test_a_missing_or_unreadable_named_folder_names_the_path(tmp_path):
    with pytest.raises(DatasetMissing, match=str(tmp_path / "absent")):
        resolve_dataset(tmp_path / "absent")
    broken = write_tiny_cifar(tmp_path / "broken")
    (broken / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetMissing, match="cannot be read"):
        resolve_dataset(broken)
    with pytest.raises(DatasetMissing, match="ALEXNET_DATA"):
        resolve_dataset(tmp_path)


def test_a_planted_pickle_that_would_run_code_is_refused(tmp_path):
    folder = write_tiny_cifar(tmp_path / "evil")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (shutil.copy, (__file__, str(marker)))

    with open(folder / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    with pytest.raises(DatasetMissing, match="refused"):
        resolve_dataset(folder)
    assert not marker.exists()


def test_validation_split_is_seeded_and_disjoint():
    x = torch.arange(100).view(100, 1, 1, 1).expand(100, 3, 2, 2).to(torch.uint8)
    y = torch.arange(100)
    a = split_validation(x, y, 0.2, seed=3)
    b = split_validation(x, y, 0.2, seed=3)
    c = split_validation(x, y, 0.2, seed=4)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    assert len(a[3]) == 20 and set(a[1].tolist()).isdisjoint(a[3].tolist())


@pytest.mark.parametrize("aug, size", [(Augment(), 32), (Augment(), 227), (Augment(rotate_degrees=36, zoom=0.1), 227),
                                       (Augment(crop_padding=0, flip=False), 32)])
def test_batch_augmentation_gives_normalised_batches_at_the_input_size(mini_data, aug, size):
    batch = mini_data.train_x[:16]
    out = augment_batch(batch, aug, size, torch.Generator().manual_seed(0))
    again = augment_batch(batch, aug, size, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, size, size) and out.dtype == torch.float32
    assert torch.equal(out, again)
    assert -0.6 < float(out.mean()) < 0.6 and 0.6 < float(out.std()) < 1.4


def test_flip_and_crop_change_images_but_keep_their_content(mini_data):
    batch = mini_data.train_x[:64]
    plain = augment_batch(batch, Augment(crop_padding=0, flip=False), 32, torch.Generator().manual_seed(0))
    flipped = augment_batch(batch, Augment(crop_padding=0, flip=True), 32, torch.Generator().manual_seed(0))
    same = [torch.equal(a, b) for a, b in zip(plain, flipped)]
    mirrored = [torch.equal(a.flip(-1), b) for a, b in zip(plain, flipped)]
    assert all(s or m for s, m in zip(same, mirrored)) and 10 < sum(mirrored) < 54


def test_download_offline_fails_at_once_with_a_clear_message(tmp_path, monkeypatch):
    import time

    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")  # nothing listens there
    start = time.monotonic()
    with pytest.raises(DatasetMissing, match=f"could not download CIFAR-10 into {tmp_path}"):
        data.download_cifar10(tmp_path)
    assert time.monotonic() - start < 10
    progress = data.download_progress(tmp_path)
    assert progress["state"] == "failed" and "Offline?" in progress["reason"]
    assert data.download_progress(tmp_path / "never")["state"] == "none"


def test_a_two_epoch_run_on_the_embedded_sample_learns(no_usual_places):
    from alexnet.presets import get
    from alexnet.train import train

    result = train(get("fast-cpu-demo").config(epochs=2))
    assert result["dataset"].startswith("embedded sample") and result["dataset_kind"] == "sample"
    assert result["test_accuracy"] > 0.2, result["test_accuracy"]  # chance is 0.10
