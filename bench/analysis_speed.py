"""Speed of the Evaluate page's work: the evaluation view of a finished run, and the top-nine pass.

    python bench/analysis_speed.py [--threads 1] [--repeats 3] [--images N] [--data DIR]

Budgets (issue 16; cifar variant, one thread, 2-core CPU): the evaluation view of a finished run
under 1 s, the top-nine pass over the mini subset's 1,017 test images under 10 s.

- **evaluation view**: what the page computes for a finished run once the test set is loaded (the
  app keeps that in memory): read its result.json, check it against the test set, read the kept
  probabilities, build the evaluation and the 18 most confident mistakes, the confusion figure as
  the JSON Streamlit sends, and the 18 gallery tiles as PNG. Reference: parsing result.json alone.
- **top-nine pass**: `receptive.top_images` for every channel of every conv layer in one pass over
  the test images. Reference: the same forward pass through the conv stack with nothing kept.
- **probability pass**: `evaluation.test_probabilities`, the background pass of a first visit
  (the batch in NHWC, `to_model_input(channels_last=True)`). Reference: the same pass with the
  batch in torch's default NCHW layout.
- **test-set pass**: `train.evaluate`, which ends every training run, in the CPU's
  `inference_batch_size` (64). Reference: the same pass in batches of 500, its batch until then.

The run is made here from the demo model (its weights, and a result.json from `train.evaluate` on
the test set), so the figures need nothing but the repository and the dataset. Paths are timed in
alternating blocks (bench/common.py); say which machine and load a figure comes from.
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import MINI, interleaved, machine, print_table  # noqa: E402  (puts the repo on the path)

from alexnet import analysis, charts, compare, evaluation, receptive  # noqa: E402
from alexnet.checkpoints import load_model  # noqa: E402
from alexnet.data import Cifar10, inference_batch_size, load_cifar10, normalization, to_model_input  # noqa: E402
from alexnet.predict import DEMO_WEIGHTS  # noqa: E402
from alexnet.runs import RunWriter, read_json  # noqa: E402
from alexnet.train import confusion_matrix, evaluate  # noqa: E402

GALLERY = 18
BATCH = inference_batch_size(torch.device("cpu"))   # the references take the passes' own batch


def finished_run(root: Path, model: torch.nn.Module, data: Cifar10) -> Path:
    """A run folder as training leaves it: the demo's weights and the result of evaluating it on the test set."""
    writer = RunWriter.create(root, "demo-as-a-run", {"variant": "cifar", "norm": "bn", "data_dir": str(data.source.path)})
    shutil.copy(DEMO_WEIGHTS, writer.path / "weights.safetensors")
    loss, accuracy, predictions = evaluate(model, data.test_x, data.test_y, torch.device("cpu"))
    confusion = confusion_matrix(data.test_y, predictions, len(data.classes))
    writer.write_result({"test_accuracy": accuracy, "test_loss": loss, "classes": list(data.classes),
                         "confusion_matrix": confusion.tolist(), "predictions": predictions.tolist(),
                         "per_class_accuracy": (confusion.diag().float() / confusion.sum(1).clamp_min(1)).tolist(),
                         "test_images": len(data.test_x), "dataset": data.source.label})
    writer.set_status("finished")
    subject = analysis.subject(writer.path / "weights.safetensors", data.source, root)
    evaluation.save_probabilities(subject, evaluation.test_probabilities(model, data))   # kept, as on a 2nd visit
    return writer.path


def evaluation_view(run: Path, data: Cifar10, root: Path) -> None:
    result = read_json(run / "result.json")
    labels = data.test_y.numpy()
    assert compare.dataset_mismatch(result, labels.tolist(), data.source.label) is None
    subject = analysis.subject(run / "weights.safetensors", data.source, root)
    found = evaluation.from_result(result, labels, evaluation.load_probabilities(subject))
    [{"recall": r, "precision": p} for r, p in zip(found.recall, found.precision)]       # the class table
    charts.confusion_figure(found.counts, found.classes).to_json()
    for mistake in found.mistakes(limit=GALLERY):
        tile = np.repeat(np.repeat(data.test_x[mistake.index].permute(1, 2, 0).numpy(), 3, 0), 3, 1)
        Image.fromarray(tile).save(io.BytesIO(), "PNG")


def conv_stack_only(model: torch.nn.Module, images: torch.Tensor, batch_size: int = BATCH) -> None:
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_model_input(images[start:start + batch_size], model.input_size, *normalization(model),
                               channels_last=True)
            model.features[:-1](x)    # through conv5's ReLU


def probabilities_nchw(model: torch.nn.Module, images: torch.Tensor, batch_size: int = BATCH) -> None:
    """`predict.probabilities` with the batch in torch's default NCHW layout, as it was before it took NHWC."""
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_model_input(images[start:start + batch_size], model.input_size, *normalization(model))
            torch.softmax(model(x).float(), dim=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the budgets are for one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=0, help="use only the first N test images (0 = all)")
    parser.add_argument("--data", default=str(MINI), help="dataset folder (default: the mini subset)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    data = load_cifar10(Path(args.data))
    if args.images:
        data = Cifar10(data.train_x, data.train_y, data.test_x[:args.images], data.test_y[:args.images],
                       data.classes, data.source)
    model, cpu = load_model(DEMO_WEIGHTS), torch.device("cpu")
    print(f"{data.source.label}: {len(data.test_x):,} test images; the demo model (cifar, BN); "
          f"median of {args.repeats} in alternating blocks\n")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        run = finished_run(root, model, data)
        view = interleaved({"view": lambda: evaluation_view(run, data, root),
                            "result.json": lambda: json.loads((run / "result.json").read_text())},
                           steps=args.repeats, warmup=1, rounds=args.repeats)
    passes = interleaved({"top nine": lambda: receptive.top_images(model, data.test_x),
                          "conv stack": lambda: conv_stack_only(model, data.test_x),
                          "probabilities": lambda: evaluation.test_probabilities(model, data),
                          "probabilities NCHW": lambda: probabilities_nchw(model, data.test_x),
                          "test set": lambda: evaluate(model, data.test_x, data.test_y, cpu),
                          "test set, 500": lambda: evaluate(model, data.test_x, data.test_y, cpu, batch_size=500)},
                         steps=args.repeats, warmup=1, rounds=args.repeats)
    rows = [("evaluation view of a finished run", f"{view['view'].median_wall:.3f}",
             f"{view['view'].median_cpu:.3f}", f"{view['view'].median_wall / view['result.json'].median_wall:.1f}x "
             "parsing result.json", "1 s"),
            (f"top-nine pass, {len(data.test_x):,} images, all 5 layers", f"{passes['top nine'].median_wall:.2f}",
             f"{passes['top nine'].median_cpu:.2f}",
             f"{passes['top nine'].median_wall / passes['conv stack'].median_wall:.2f}x the bare conv stack", "10 s"),
            (f"probability pass, {len(data.test_x):,} images", f"{passes['probabilities'].median_wall:.2f}",
             f"{passes['probabilities'].median_cpu:.2f}",
             f"{passes['probabilities'].median_wall / passes['probabilities NCHW'].median_wall:.2f}x the same pass "
             "in NCHW", "-"),
            (f"test-set pass, {len(data.test_x):,} images", f"{passes['test set'].median_wall:.2f}",
             f"{passes['test set'].median_cpu:.2f}",
             f"{passes['test set'].median_wall / passes['test set, 500'].median_wall:.2f}x the same pass "
             "in batches of 500", "-")]
    print_table(["work", "seconds (wall)", "seconds (CPU)", "against its reference", "budget"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
