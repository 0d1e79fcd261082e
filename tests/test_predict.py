"""alexnet.predict: the demo model matches its card, one preprocessing path, the model picker's list."""
from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from alexnet import imagenet, predict, runs
from alexnet.checkpoints import load_model
from alexnet.cli import main as cli_main
from alexnet.data import CIFAR10_CLASSES, inference_batch_size, normalization, to_model_input
from alexnet.images import load_image, to_cifar_array, to_tensor
from alexnet.inputs import SHOWN_SIZE, ImageForms, model_image
from alexnet.models import build
from alexnet.predict import DEMO_WEIGHTS, MODEL_CARD, Prediction, available_models, model_in_use, predict_images
from alexnet.train import evaluate
from alexnet.weight_files import save_weights


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_WEIGHTS)


def card_figure(pattern: str) -> str:
    match = re.search(pattern, MODEL_CARD.read_text(), re.IGNORECASE)
    assert match, f"the model card states no {pattern!r}"
    return match.group(1)


# ---- the demo model and its card ----

def test_demo_accuracy_on_the_mini_test_batch_matches_the_model_card(demo, mini_data):
    stated = card_figure(r"test accuracy[^0-9]*([01]\.\d+)")
    stated_correct, stated_total = map(int, re.search(r"\((\d+) of (\d+)", MODEL_CARD.read_text()).groups())
    _, accuracy, preds = evaluate(demo, mini_data.test_x, mini_data.test_y, torch.device("cpu"))
    decimals = len(stated.split(".")[1])
    assert f"{accuracy:.{decimals}f}" == stated
    assert (stated_correct, stated_total) == (int((preds == mini_data.test_y).sum()), len(mini_data.test_y))
    assert 0.5 < accuracy < 0.8          # the card's "roughly 60-70%": a broken model would be near 0.1


def test_the_evaluation_pass_gives_the_same_figures_whatever_its_batch_and_layout(demo, mini_data):
    """On a CPU the pass takes NHWC batches of 64 (`inference_batch_size`), faster than the 500 it took before
    (bench/analysis_speed.py): a matter of speed, never of the figures."""
    x, y, cpu = mini_data.test_x[:300], mini_data.test_y[:300], torch.device("cpu")
    assert inference_batch_size(cpu) < len(x)
    loss, accuracy, preds = evaluate(demo, x, y, cpu)
    whole_loss, whole_accuracy, whole_preds = evaluate(demo, x, y, cpu, batch_size=len(x), channels_last=False)
    assert torch.equal(preds, whole_preds) and accuracy == whole_accuracy
    assert math.isclose(loss, whole_loss, rel_tol=1e-5), (loss, whole_loss)


def test_predict_images_agrees_with_the_evaluation_path(demo, mini_data):
    """Test images given as PIL images (the app's and the CLI's path) get the evaluation's predictions."""
    x = mini_data.test_x[:64]
    _, _, preds = evaluate(demo, x, mini_data.test_y[:64], torch.device("cpu"))
    pictures = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in x]
    top = predict_images(demo, pictures, top=1)
    assert [CIFAR10_CLASSES.index(t[0][0]) for t in top] == preds.tolist()


def test_demo_file_is_small_fp16_and_says_what_it_is():
    assert DEMO_WEIGHTS.stat().st_size < 10 * 2**20
    with safe_open(str(DEMO_WEIGHTS), framework="pt") as f:
        meta = f.metadata()
        dtypes = {f.get_tensor(k).dtype for k in f.keys() if "num_batches" not in k}
    assert (meta["variant"], meta["norm"]) == ("cifar", "bn")
    assert dtypes == {torch.float16}
    config = json.loads(meta["config"])
    assert (config["variant"], config["norm"], config["epochs"]) == ("cifar", "bn", int(card_figure(r"(\d+) epochs")))


def test_the_pickers_caption_of_the_demo_states_the_cards_accuracy_as_runs_do():
    stated = float(card_figure(r"test accuracy[^0-9]*([01]\.\d+)"))
    demo_choice = next(c for c in available_models(None) if c.path == DEMO_WEIGHTS)
    assert demo_choice.detail.startswith(f"test accuracy {stated:.1%} (678 of 1017 test images"), demo_choice.detail


def test_model_card_names_the_command_that_remakes_the_model():
    card = MODEL_CARD.read_text()
    assert "assets/demo/make_demo.sh" in card
    assert "python -m alexnet eval --weights assets/demo/demo-cifar-bn.safetensors" in card


def test_cli_predict_uses_the_demo_model_by_default(capsys):
    assert cli_main(["predict", str(predict.EXAMPLES_DIR / "chelsea.png"), "--top", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(predict.EXAMPLES_DIR / "chelsea.png") + ": ")
    assert line.count("%") == 2


# ---- predictions ----

def test_prediction_measures_of_certainty():
    sure = Prediction((1.0,) + (0.0,) * 9, CIFAR10_CLASSES)
    unsure = Prediction((0.1,) * 10, CIFAR10_CLASSES)
    assert (sure.label, sure.confidence, sure.entropy_bits, sure.uncertainty) == ("airplane", 1.0, 0.0, 0.0)
    assert unsure.entropy_bits == pytest.approx(math.log2(10))
    assert unsure.uncertainty == pytest.approx(1.0)
    mixed = Prediction((0.0, 0.25, 0.0, 0.75) + (0.0,) * 6, CIFAR10_CLASSES)
    assert mixed.top(2) == [("cat", 0.75), ("automobile", 0.25)]
    assert mixed.entropy_bits == pytest.approx(-(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)))


def test_predict_images_gives_sorted_probabilities_that_sum_to_one(demo):
    photos = [load_image(e.path) for e in predict.example_images()]
    results = predict_images(demo, photos, top=10)
    assert len(results) == len(photos)
    for top in results:
        probs = [p for _, p in top]
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert sorted(label for label, _ in top) == sorted(CIFAR10_CLASSES)


def test_one_preprocessing_path_photo_and_its_32px_array_agree(demo):
    photo = load_image(predict.EXAMPLES_DIR / "chelsea.png")
    a = predict.predict(demo, photo)
    b = predict.predict(demo, to_cifar_array(photo, 32))
    assert a == b


def test_a_test_image_through_png_round_trip_is_classified_as_in_the_dataset(demo, mini_data):
    """The gallery hands images to the pages as PNG bytes: decoding must give back the exact pixels."""
    img = mini_data.test_x[7].permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    decoded = to_cifar_array(load_image(buf.getvalue()), 32)
    assert np.array_equal(decoded, img)
    direct = predict.probabilities(demo, mini_data.test_x[7:8])[0]
    assert torch.allclose(torch.tensor(predict.predict(demo, decoded).probabilities), direct)


@pytest.mark.parametrize("variant,norm", [("cifar", "bn"), ("cifar", "lrn"), ("paper", "lrn")])
def test_probabilities_feed_the_model_nhwc_and_give_its_own_answer(variant, norm, mini_data):
    """The pass lays each batch out NHWC, which the convolutions take faster (bench/analysis_speed.py); the
    probabilities are the model's on the default layout, up to rounding."""
    torch.manual_seed(0)
    model = build(variant, norm).eval()
    x = mini_data.test_x[:6]
    layouts = []
    handle = model.features[0].register_forward_pre_hook(
        lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        fast = predict.probabilities(model, x, batch_size=4)
    finally:
        handle.remove()
    assert layouts == [True, True]
    with torch.no_grad():
        nchw = torch.softmax(model(to_model_input(x, model.input_size, *normalization(model))), dim=1)
    assert torch.allclose(fast, nchw, atol=1e-5), (fast - nchw).abs().max()


# ---- one image, as each model takes it ----

def test_a_cifar_model_takes_the_32px_crop_and_people_see_that_crop(demo):
    photo = load_image(predict.EXAMPLES_DIR / "chelsea.png")
    prepared = model_image(photo, demo)
    assert np.array_equal(prepared.pixels, to_cifar_array(photo, 32))
    assert np.array_equal(prepared.shown, to_cifar_array(photo, SHOWN_SIZE))   # the same square crop, for people
    assert (prepared.input_size, (prepared.mean, prepared.std)) == (32, normalization(demo))
    assert torch.equal(prepared.tensor(), to_model_input(to_tensor(prepared.pixels), 32, *normalization(demo)))
    assert np.array_equal(prepared.seen(), prepared.pixels)                     # no upsampling: it sees its pixels
    assert predict.predict(demo, prepared) == predict.predict(demo, photo)


def test_the_paper_model_sees_the_32px_image_upsampled_to_227():
    paper = build("paper", "lrn")
    small = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    prepared = model_image(small, paper)
    assert np.array_equal(prepared.pixels, small) and prepared.input_size == 227
    assert np.array_equal(prepared.shown, np.repeat(np.repeat(small, 7, axis=0), 7, axis=1))  # square pixels, 224
    assert prepared.tensor().shape == (1, 3, 227, 227)
    seen = prepared.seen()  # the real input with only the normalisation undone
    assert seen.shape == (227, 227, 3) and seen.dtype == np.uint8
    assert np.abs(seen.reshape(-1, 3).mean(0) - small.reshape(-1, 3).mean(0)).max() < 3  # bilinear keeps the colour


def test_the_imagenet_model_takes_torchvisions_224_crop_and_people_see_that_region():
    model = imagenet.build_model()
    photo = load_image(predict.EXAMPLES_DIR / "chelsea.png")
    prepared = model_image(photo, model)
    assert np.array_equal(prepared.pixels, imagenet.photo_pixels(photo)) and prepared.shown is prepared.pixels
    assert (prepared.input_size, prepared.mean, prepared.std) == (224, imagenet.MEAN, imagenet.STD)
    assert torch.equal(prepared.tensor(), imagenet.WEIGHTS.transforms()(photo)[None])
    assert np.array_equal(prepared.seen(), prepared.pixels)


def test_one_decoding_answers_every_model_as_model_image_does(demo):
    photo = load_image(predict.EXAMPLES_DIR / "coffee.jpg")
    forms = ImageForms.of(photo)
    assert (forms.width, forms.height) == photo.size
    for model in (demo, build("paper", "bn"), imagenet.build_model()):
        cached, direct = forms.for_model(model), model_image(photo, model)
        assert np.array_equal(cached.pixels, direct.pixels) and np.array_equal(cached.shown, direct.shown)
        assert torch.equal(cached.tensor(), direct.tensor())
    with pytest.raises(ValueError, match="uint8"):
        ImageForms.of(np.zeros((32, 32, 3), np.float32))


def test_model_in_use_switches_a_training_model_to_eval_and_back():
    model = build("cifar", "bn").train()
    with model_in_use(model):
        assert not model.training
        assert all(not m.training for m in model.modules())
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    with model_in_use(model):
        pass
    assert not model.training


def test_prediction_does_not_change_batch_norm_statistics():
    torch.manual_seed(0)
    model = build("cifar", "bn", init="torch").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predict_images(model, [np.full((32, 32, 3), 200, dtype=np.uint8)])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ---- which models the pages offer ----

def make_run(root, name, state, weights=True, result=None):
    writer = runs.RunWriter.create(root, name, {"variant": "cifar", "norm": "lrn", "epochs": 3})
    if weights:
        save_weights(writer.path / "weights.safetensors", build("cifar", "lrn"))
    writer.set_status(state, epoch=2, checkpoint=weights)
    if result:
        writer.write_result(result)
    return writer.path


def test_available_models_offers_the_demo_and_finished_or_stopped_runs_with_weights(runs_dir):
    make_run(runs_dir, "done", "finished", result={"test_accuracy": 0.5, "dataset": "CIFAR-10 subset"})
    make_run(runs_dir, "paused", "stopped")
    make_run(runs_dir, "broken", "failed")
    make_run(runs_dir, "no-weights", "stopped", weights=False)
    choices = available_models(runs_dir)
    assert choices[0].kind == "demo" and choices[0].path == DEMO_WEIGHTS
    assert "test accuracy" in choices[0].detail.lower()
    by_name = {c.path.parent.name: c for c in choices[1:]}
    assert set(by_name) == {"done", "paused"}
    assert "50.0%" in by_name["done"].detail and "CIFAR-10 subset" in by_name["done"].detail
    assert "stopped after epoch 2 of 3" in by_name["paused"].detail
    assert (by_name["done"].variant, by_name["done"].norm) == ("cifar", "lrn")


def test_saved_upload_stays_in_its_folder_keeps_the_name_and_only_a_known_suffix(tmp_path):
    a = predict.saved_upload(b"weights", "../../evil name.safetensors", tmp_path)
    assert a.parent.parent == tmp_path and a.name == "evil-name.safetensors" and a.read_bytes() == b"weights"
    assert predict.saved_upload(b"weights", "../../evil name.safetensors", tmp_path) == a
    other = predict.saved_upload(b"other weights", "evil name.safetensors", tmp_path)
    assert other.parent != a.parent
    unknown = predict.saved_upload(b"weights", "model.exe", tmp_path)
    assert unknown.name == "model-exe" and unknown.suffix == ""
    assert predict.saved_upload(b"weights", "model.PTH", tmp_path).name == "model.pth"


def test_export_demo_writes_fp16_that_loads_back_to_the_same_predictions(tmp_path):
    torch.manual_seed(1)
    model = build("cifar", "bn", init="torch").eval()
    source = tmp_path / "weights.safetensors"
    save_weights(source, model, {"variant": "cifar", "norm": "bn", "epochs": 1})
    target = predict.export_demo(source, tmp_path / "demo.safetensors")
    assert target.stat().st_size < source.stat().st_size * 0.55
    again = load_model(target)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(predict.probabilities(again, x), predict.probabilities(model, x), atol=2e-3)


def test_example_images_are_described_by_their_readme():
    examples = predict.example_images()
    assert examples[0].path.name == "chelsea.png" and examples[0].cifar_class == "cat"
    assert {e.path.name for e in examples} >= {"coffee.jpg", "astronaut.jpg", "rocket.jpg"}
    assert all(e.cifar_class is None for e in examples[1:])
