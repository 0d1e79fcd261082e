"""`python -m alexnet ...`: the command line over the same library functions the app uses."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path
from typing import Sequence

from . import runs as run_records
from .config import TrainConfig
from .presets import PRESETS, get as get_preset


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per TrainConfig field, typed from its default."""
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif isinstance(default, list):
            parser.add_argument(flag, type=lambda s: [int(v) for v in s.split(",") if v.strip()], default=None,
                                metavar="N,N", help="comma-separated epochs")
        else:
            parser.add_argument(flag, type=type(default) if default is not None else str, default=None,
                                metavar=f.name.upper())


def _preset_config(args: argparse.Namespace) -> dict | None:
    """The named preset's values (milestones moved to --epochs when given); explicit flags override them."""
    if not getattr(args, "preset", None):
        return None
    return get_preset(args.preset).config(epochs=args.epochs).to_dict()


def _config_from(args: argparse.Namespace, base: dict | None = None) -> TrainConfig:
    values = dict(base or {})
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    return TrainConfig.from_dict(values)


class _ProgressBar:
    """A one-line progress bar on stderr, driven by training events."""

    def __init__(self) -> None:
        self.total = 0
        self.bar = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        kind = event["event"]
        if kind == "start":
            self.total = event["steps_per_epoch"] * event["epochs"]
            self.bar = tqdm(total=self.total, initial=event["global_step"], unit="step", file=sys.stderr,
                            dynamic_ncols=True)
            print(f"{event['dataset']} on {event['device']} ({event['precision']}): {event['train_images']} train, "
                  f"{event['val_images']} val, {event['test_images']} test images; {event['parameters']:,} parameters",
                  file=sys.stderr)
        elif kind == "step" and self.bar:
            self.bar.update(event["global_step"] - self.bar.n)
            self.bar.set_postfix(epoch=f"{event['epoch']:.2f}", loss=f"{event['loss']:.3f}",
                                 img_s=f"{event['images_per_s']:.0f}", lr=f"{event['lr']:.2g}")
        elif kind == "epoch" and self.bar:
            self.bar.write(f"epoch {event['epoch']:3d}  train loss {event['train_loss']:.3f} acc "
                           f"{event['train_acc']:.3f}  val loss {event['val_loss']:.3f} acc {event['val_acc']:.3f}  "
                           f"{event['epoch_seconds']:.1f}s {event['images_per_s']:.0f} img/s")
        elif kind in ("end", "stopped") and self.bar:
            self.bar.close()


def _install_stop_handlers() -> threading.Event:
    """SIGINT and SIGTERM finish the current step, save a checkpoint and stop; a second signal is not needed."""
    stop = threading.Event()

    def handler(signum, _frame):
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def cmd_train(args: argparse.Namespace) -> int:
    from .jobs import device_lock
    from .train import train

    root = run_records.runs_root(args.runs)
    if args.resume and args.preset:
        raise ValueError("--preset starts a new run; a resumed run keeps its own config")
    if args.resume:
        folder = root / run_records.check_name(args.resume)
        config = _config_from(args, run_records.read_json(folder / "config.json", {}))
        name = args.resume
    else:
        config = _config_from(args, _preset_config(args))
        name = args.name or run_records.unique_name(root, f"{config.variant}-{config.norm}-{config.optimizer}")
    config.validate()
    if args.resume:
        writer = run_records.RunWriter(folder)
    else:
        writer = run_records.RunWriter.create(root, name, config.to_dict())
    stop = _install_stop_handlers()
    print(f"run {name}: {writer.path}", file=sys.stderr)
    with device_lock(root, writer, stop):
        if stop.is_set():
            writer.set_status("stopped", reason="stopped while waiting in the queue", checkpoint=False)
            return 0
        result = train(config, writer.path, on_event=_ProgressBar() if not args.quiet else None, stop=stop,
                       resume=bool(args.resume))
    if result:
        print(f"test accuracy {result['test_accuracy']:.4f} on {result['test_images']} images of {result['dataset']}; "
              f"{result['train_seconds']:.1f}s training, {result['seconds_per_epoch']:.1f}s per epoch")
    else:
        print(f"stopped; resume with: python -m alexnet train --resume {name}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    if args.delete:
        run_records.delete_run(args.runs, args.delete)
        print(f"deleted {args.delete}")
        return 0
    rows = run_records.list_runs(args.runs)
    if args.json:
        print(json.dumps([{"name": r.name, "state": r.state, "config": r.config, "status": r.status,
                           "test_accuracy": (r.result or {}).get("test_accuracy")} for r in rows], indent=1))
        return 0
    if not rows:
        print(f"no runs in {run_records.runs_root(args.runs)}")
        return 0
    print(f"{'name':32} {'state':9} {'variant':7} {'norm':5} {'epochs':>7} {'test acc':>8}")
    for r in rows:
        acc = (r.result or {}).get("test_accuracy")
        print(f"{r.name:32} {r.state:9} {r.config.get('variant', '?'):7} {r.config.get('norm', '?'):5} "
              f"{r.status.get('epoch', 0):>3}/{r.config.get('epochs', '?'):<3} "
              f"{'' if acc is None else f'{acc:.4f}':>8}")
        if r.state == "failed" and r.status.get("reason"):
            print(f"    {r.status['reason']}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from .models import build, count_parameters, summary

    model = build(args.variant, args.norm)
    rows = summary(model)
    print(f"{'layer':14} {'type':18} {'output':>16} {'params':>12} {'mult-adds':>14}")
    for r in rows:
        print(f"{r.name:14} {r.kind:18} {'x'.join(map(str, r.output_shape)):>16} {r.parameters:>12,} {r.mult_adds:>14,}")
    print(f"{'total':14} {'':18} {'':>16} {count_parameters(model):>12,} {sum(r.mult_adds for r in rows):>14,}")
    return 0


def _model_for(args: argparse.Namespace):
    from .checkpoints import load_model

    path = Path(args.weights) if args.weights else None
    if args.run:
        path = run_records.runs_root(args.runs) / run_records.check_name(args.run) / "weights.safetensors"
    if path is None:
        from .predict import DEMO_WEIGHTS
        path = DEMO_WEIGHTS
    return load_model(path), path


def cmd_eval(args: argparse.Namespace) -> int:
    from .data import load_cifar10, resolve_dataset
    from .train import evaluate, pick_device

    model, path = _model_for(args)
    data = load_cifar10(resolve_dataset(args.data))
    loss, acc, _ = evaluate(model, data.test_x, data.test_y, pick_device("cpu"))
    print(f"{path}: test accuracy {acc:.4f}, loss {loss:.4f} on {len(data.test_x)} images of {data.source.label}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .images import ImageError, load_image
    from .predict import predict_images

    model, _ = _model_for(args)
    status = 0
    for name in args.images:
        try:
            image = load_image(Path(name))
        except ImageError as err:
            print(f"{name}: {err}", file=sys.stderr)
            status = 1
            continue
        top = predict_images(model, [image], top=args.top)[0]
        print(f"{name}: " + ", ".join(f"{label} {p:.1%}" for label, p in top))
    return status


def cmd_download(args: argparse.Namespace) -> int:
    from .data import download_cifar10

    source = download_cifar10(args.data)
    print(f"{source.label} in {source.path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alexnet", description=__doc__)
    parser.add_argument("--runs", default=None, help="runs folder (default: $ALEXNET_RUNS or ./runs)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a variant; writes a run folder", description=
                       "Train one run. Every TrainConfig field is a flag. SIGINT/SIGTERM save a checkpoint and stop.")
    p.add_argument("--name", help="run name (default: variant-norm-optimizer, numbered)")
    p.add_argument("--resume", metavar="NAME", help="continue a stopped run from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--preset", choices=list(PRESETS), help="start from a named recipe ("
                   + "; ".join(f"{k}: {v.title}" for k, v in PRESETS.items()) + "); other flags override it")
    _config_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("runs", help="list runs (or delete one)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--delete", metavar="NAME")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("summary", help="each layer's output shape, parameters and multiply-adds")
    p.add_argument("variant", choices=["cifar", "paper"])
    p.add_argument("--norm", default="lrn", choices=["lrn", "bn", "none"])
    p.set_defaults(func=cmd_summary)

    for name, func, text in (("eval", cmd_eval, "test accuracy of a run or weights file"),
                             ("predict", cmd_predict, "classify image files")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--run", help="a run name in the runs folder")
        p.add_argument("--weights", help="a .safetensors (or weights-only .pt) file; default: the demo model")
        if name == "eval":
            p.add_argument("--data", help="dataset folder (default: $ALEXNET_DATA, usual places, sample)")
        else:
            p.add_argument("images", nargs="+")
            p.add_argument("--top", type=int, default=3)
        p.set_defaults(func=func)

    p = sub.add_parser("download", help="download CIFAR-10 (online) where the app finds it")
    p.add_argument("--data", help="target folder (default: ~/.cache/alexnet-lab)")
    p.set_defaults(func=cmd_download)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
