"""`python -m alexnet ...`: the command line over the same library functions the app uses."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from . import analysis, analysis_jobs, archive, distributed, experiment, lr_finder, lr_search, queues
from . import runs as run_records
from .checkpoints import load_model
from .config import PRECISIONS, TrainConfig, with_variant
from .data import SAMPLE_DIR, download_cifar10, load_cifar10, resolve_dataset, source_at, write_sample
from .experiment import COMPARABLE_VARIANTS, RECIPES, ExperimentPlan
from .flags import add_field_flags, field_flags, given_values
from .images import ImageError, load_image
from .jobs import device_lock
from .models import VARIANTS, build, count_parameters, summary
from .norms import NORMS
from .predict import DEMO_WEIGHTS, predict_images
from .presets import PRESETS, get as get_preset
from .train import evaluate, pick_device, train
from .visualize import STEPS, Objective

__all__ = ["main", "build_parser", "train_config", "experiment_plan", "experiment_command", "EXPERIMENT_FLAG_NAMES"]

EXPERIMENT_FLAG_NAMES = {"data_dir": "data"}  # --data, as eval and download name a dataset folder


def train_config(args: argparse.Namespace, resumed: dict | None = None) -> TrainConfig:
    """The config a `train` command line asks for, not yet validated: a resumed run's own config, else the
    --preset's values (its milestones moved to --epochs when given), else the defaults; each flag given wins."""
    if resumed is not None:
        base = resumed
    elif args.preset:
        base = get_preset(args.preset).config(epochs=args.epochs).to_dict()
    else:
        base = {}
    given = given_values(args, TrainConfig)
    if resumed is None and "variant" in given and "lr" not in given:  # the rate follows the variant it was set for
        base = with_variant(TrainConfig.from_dict(base), given["variant"]).to_dict()
    return TrainConfig.from_dict({**base, **given})


def experiment_plan(args: argparse.Namespace) -> ExperimentPlan:
    """The plan an `experiment` command line asks for; its dataset folder made absolute for the runs' processes."""
    values = given_values(args, ExperimentPlan)
    if values.get("data_dir"):
        values["data_dir"] = str(Path(values["data_dir"]).expanduser().resolve())
    return ExperimentPlan(**values)


def experiment_command(plan: ExperimentPlan) -> str:
    """The command line that queues `plan` and waits for its verdict (the Compare page shows it)."""
    shown = ("variant", "seeds", "epochs", "recipe")  # what a reader looks for first, defaults or not
    return " ".join(["python -m alexnet experiment", *field_flags(plan, EXPERIMENT_FLAG_NAMES, shown), "--wait"])


class _ProgressBar:
    """A one-line progress bar on stderr, driven by training events."""

    def __init__(self) -> None:
        self.total = 0
        self.bar = None

    def __call__(self, event: dict) -> None:
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
    group = distributed.setup()  # a no-op unless started by torchrun
    root = run_records.runs_root(args.runs)
    if args.resume and args.preset:
        raise ValueError("--preset starts a new run; a resumed run keeps its own config")
    resumed = None
    if args.resume:
        resumed = run_records.read_json(root / run_records.check_name(args.resume) / "config.json", None)
        if resumed is None:
            raise FileNotFoundError(f"no run named {args.resume!r} in {root}")
    config = train_config(args, resumed)
    if group.active and not args.resume:
        config = replace(config, processes=group.world)  # started by torchrun: the record says how many trained it
    config.validate()
    name = args.resume
    if group.main and not args.resume:
        name = args.name or run_records.unique_name(root, f"{config.variant}-{config.norm}-{config.optimizer}")
        run_records.RunWriter.create(root, name, config.to_dict())
    name = group.broadcast(name)
    writer = run_records.RunWriter(root / name)
    stop = _install_stop_handlers()
    if group.main:
        print(f"run {name}: {writer.path}", file=sys.stderr)
    if config.processes > 1 and not group.active:
        return _train_data_parallel(args, root, writer, config, stop)
    try:
        result = _train_queued(args, root, writer, config, stop, group)
    finally:
        distributed.teardown()
    if not group.main or result is None:
        return 0
    if result:
        print(f"test accuracy {result['test_accuracy']:.4f} on {result['test_images']} images of {result['dataset']}; "
              f"{result['train_seconds']:.1f}s training, {result['seconds_per_epoch']:.1f}s per epoch")
    else:
        print(f"stopped; resume with: python -m alexnet train --resume {name}")
    return 0


def _stopped_in_queue(writer: run_records.RunWriter) -> None:
    writer.set_status("stopped", reason="stopped while waiting in the queue",
                      checkpoint=(writer.path / "state.pt").exists())


def _train_queued(args: argparse.Namespace, root: Path, writer: run_records.RunWriter, config: TrainConfig,
                  stop: threading.Event, group: distributed.Group) -> dict | None:
    """Wait in the queue of the device(s) the run trains on, then train on the device taken; None if stopped
    while waiting. Only the main process queues, and none when the launcher of a data-parallel run holds the
    queues for its processes (--queue-held)."""
    if not group.main or args.queue_held:
        held = nullcontext([])
    else:
        want = queues.request_for_ranks(config.device, group.local_world) if group.active else \
            queues.request(config.device, config.processes)
        held = device_lock(root, writer, want, stop)
    with held as taken:
        if group.main and stop.is_set():
            _stopped_in_queue(writer)
            return None
        if taken and not group.active:
            config = replace(config, device=taken[0])  # "auto" and "cuda" train on the GPU whose queue was free
        return train(config, writer.path, on_event=_ProgressBar() if not args.quiet else None, stop=stop,
                     resume=bool(args.resume))


def _train_data_parallel(args: argparse.Namespace, root: Path, writer: run_records.RunWriter, config: TrainConfig,
                         stop: threading.Event) -> int:
    """Queue for the devices of a data-parallel run, then start its processes under torchrun on them and wait.

    This process holds the run's lock and the device queues while they train, so they neither queue nor race
    each other; a stop (SIGTERM from the Stop button while they start) reaches them through torchrun.
    """
    want = queues.request(config.device, config.processes)
    with device_lock(root, writer, want, stop) as taken:
        if not taken:
            _stopped_in_queue(writer)
            return 0
        writer.set_status("queued", reason=f"starting {config.processes} data-parallel processes on "
                                           f"{', '.join(taken)}")
        code = distributed.launch(["--runs", str(root.resolve()), "train", "--resume", writer.path.name, "--queue-held",
                                   *(["--quiet"] if args.quiet else [])], config.processes, taken, stop)
    status = run_records.read_json(writer.path / "status.json", {}) or {}
    if code != 0 and status.get("state") in run_records.ACTIVE_STATES:  # they ended without saying so
        checkpoint = (writer.path / "state.pt").exists()
        if stop.is_set():
            writer.set_status("stopped", reason="stopped by request", checkpoint=checkpoint)
        else:
            writer.set_status("failed", checkpoint=checkpoint, reason=f"the {config.processes} data-parallel "
                              f"processes ended with exit code {code}: see the training log")
    return 0 if code == 0 or stop.is_set() else 1


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


def cmd_export(args: argparse.Namespace) -> int:
    folder = run_records.runs_root(args.runs) / run_records.check_name(args.run)
    out = Path(args.out or archive.archive_name(args.run))
    run_records.atomic_write(out.resolve(), archive.export_run(folder))
    print(f"{args.run} in {out} ({out.stat().st_size / 2**20:.1f} MB): import it elsewhere with "
          f"python -m alexnet import {out.name}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    name = archive.import_run(Path(args.archive), args.runs, name=args.name, limit=archive.CLI_LIMIT)
    print(f"imported as run {name} in {run_records.runs_root(args.runs) / name}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    model = build(args.variant, args.norm or VARIANTS[args.variant].norms[0])
    rows = summary(model)
    print(f"{'layer':14} {'type':18} {'output':>16} {'params':>12} {'mult-adds':>14}")
    for r in rows:
        print(f"{r.name:14} {r.kind:18} {'x'.join(map(str, r.output_shape)):>16} {r.parameters:>12,} {r.mult_adds:>14,}")
    print(f"{'total':14} {'':18} {'':>16} {count_parameters(model):>12,} {sum(r.mult_adds for r in rows):>14,}")
    return 0


def _weights_for(args: argparse.Namespace) -> Path:
    """--run's weights, else the --weights file, else the demo model's."""
    if args.run:
        return run_records.runs_root(args.runs) / run_records.check_name(args.run) / "weights.safetensors"
    if args.weights:
        return Path(args.weights)
    return DEMO_WEIGHTS


def _model_for(args: argparse.Namespace):
    if getattr(args, "imagenet", False):
        from . import imagenet  # here, not at the top: see imagenet.py's note on torchvision

        if args.run:
            raise ValueError("--imagenet uses torchvision's ImageNet weights: name their file with --weights, not --run")
        return imagenet.load_pretrained(args.weights), imagenet.weights_file(args.weights)
    path = _weights_for(args)
    return load_model(path), path


def cmd_eval(args: argparse.Namespace) -> int:
    model, path = _model_for(args)
    data = load_cifar10(resolve_dataset(args.data))
    loss, acc, _ = evaluate(model, data.test_x, data.test_y, pick_device("cpu"))
    print(f"{path}: test accuracy {acc:.4f}, loss {loss:.4f} on {len(data.test_x)} images of {data.source.label}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
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


def cmd_analyse(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = _weights_for(args)
    if args.data:
        source = source_at(args.data)
    else:  # a run is analysed on the dataset it was trained on
        config = run_records.read_json(weights.parent / "config.json", {}) if args.run else {}
        source = resolve_dataset((config or {}).get("data_dir"))
    objective = None
    if args.task == "maximise":
        if (args.klass is None) == (args.layer is None or args.channel is None):
            raise ValueError("maximise needs --layer and --channel, or --class")
        objective = Objective(klass=args.klass) if args.klass is not None else Objective(args.layer, args.channel)
    task = analysis_jobs.Task(args.task, objective, args.steps)
    print(analysis_jobs.compute(analysis.subject(weights, source, args.runs), task, args.device))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    if args.imagenet:
        from . import imagenet  # here, not at the top: see imagenet.py's note on torchvision

        print(f"torchvision's ImageNet AlexNet in {imagenet.download(progress=not args.quiet)}")
        return 0
    source = download_cifar10(args.data)
    print(f"{source.label} in {source.path}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    if min(args.train_per_class, args.test_per_class) < 1:
        raise ValueError("--train-per-class and --test-per-class must be at least 1")
    source = resolve_dataset(args.source)
    out = Path(args.out) if args.out else SAMPLE_DIR
    write_sample(load_cifar10(source), out, args.train_per_class, args.test_per_class)
    print(f"the first {args.train_per_class} train and {args.test_per_class} test images of each class of "
          f"{source.label} ({source.path}) in {out}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    root = run_records.runs_root(args.runs)
    if args.list:
        return _list_experiments(root)
    if args.report:
        print(experiment.report(experiment.summarize(experiment.load(root, args.report), root)))
        return 0
    if args.resume:  # what a tuned experiment's background process runs; by hand, it continues a stopped one
        launched = experiment.conduct(root, args.resume, stop=_install_stop_handlers())
        summary = experiment.summarize(launched, root)
        print(experiment.report(summary) if summary.search and summary.search["state"] != "finished" else
              f"experiment {launched.name}: {len(launched.runs)} runs queued")
        return _wait_for(launched, root, args) if args.wait else 0
    plan = experiment_plan(args)
    launched = experiment.launch(plan, root, name=args.name)
    what = f"({plan.variant} variant, {plan.epochs} epochs, seeds {launched.seeds}, recipe '{plan.recipe}')"
    if launched.search is not None:
        print(f"experiment {launched.name}: searching each norm's learning rate in the background (range test, "
              f"{experiment.search_settings(plan).describe()} on the training split), then {2 * plan.seeds} runs "
              f"queued, each for the first free device {what}")
    else:
        print(f"experiment {launched.name}: {len(launched.runs)} runs queued, each for the first free device {what}")
    print(f"  {launched.recipe_description}")
    for r in launched.runs:
        print(f"  {r['run']}")
    if not args.wait:
        print(f"they train in the background; the Compare page shows them, or: python -m alexnet experiment "
              f"--report {launched.name}")
        return 0
    return _wait_for(launched, root, args)


def _list_experiments(root: Path) -> int:
    found = experiment.list_experiments(root)
    if not found:
        print(f"no experiments in {experiment.experiments_dir(root)}")
    for e in found:
        summary = experiment.summarize(e, root)
        print(f"{e.name:32} {e.plan['variant']:6} {e.recipe:9} {len(e.seeds)} seed(s)  "
              f"{summary.finished}/{summary.total} finished")
    return 0


def _wait_for(launched: experiment.Experiment, root: Path, args: argparse.Namespace) -> int:
    """Wait for an experiment's search and runs, saying each change of state; then its report."""
    def progress(summary: experiment.ExperimentSummary) -> None:
        search = summary.search
        said = [f"search {search['state']}"] if search and search["state"] != "finished" else []
        print("  " + ", ".join(said + [f"{n} {s}" for s, n in sorted(summary.states.items())]), file=sys.stderr)

    try:
        summary = experiment.wait(launched, root, timeout=args.timeout, on_change=progress)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the runs go on. Later: python -m alexnet experiment --report {launched.name}",
              file=sys.stderr)
        return 130
    print(experiment.report(summary))
    return 0 if summary.total and summary.finished == summary.total else 1


def cmd_lr_find(args: argparse.Namespace) -> int:
    stop = _install_stop_handlers()
    if args.job:  # the Train page's background test: kept in the runs folder
        print(lr_search.run_job(args.runs, args.job, stop).summary())
        return 0
    base = get_preset(args.preset).config().to_dict() if args.preset else {}
    config = TrainConfig.from_dict({**base, **given_values(args, TrainConfig)}).validate()
    settings = lr_finder.RangeTestSettings(args.start, args.end, args.steps, args.smoothing,
                                           args.divergence).validate()
    bar = None if args.quiet or args.json else _RangeTestBar(settings.steps)
    result = lr_finder.range_test(config, settings, on_step=bar, stop=stop)
    if bar:
        bar.close()
    print(json.dumps(result.to_dict(), indent=1) if args.json else lr_finder.report(result))
    return 0


class _RangeTestBar:
    """A one-line progress bar on stderr for a range test's steps."""

    def __init__(self, steps: int) -> None:
        self.bar = tqdm(total=steps, unit="step", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, step: int, rate: float, loss: float, smoothed: float) -> None:
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(lr=f"{rate:.2g}", loss=f"{smoothed:.3f}")

    def close(self) -> None:
        self.bar.close()


AddParser = Callable[..., argparse.ArgumentParser]  # a subparsers object's add_parser


def _train_parser(add_parser: AddParser) -> None:
    p = add_parser("train", help="train a variant; writes a run folder", description=
                   "Train one run. Every TrainConfig field is a flag. SIGINT/SIGTERM save a checkpoint and stop.")
    p.add_argument("--name", help="run name (default: variant-norm-optimizer, numbered)")
    p.add_argument("--resume", metavar="NAME", help="continue a stopped run from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--queue-held", action="store_true", help=argparse.SUPPRESS)  # started by a data-parallel launcher
    p.add_argument("--preset", choices=list(PRESETS), help="start from a named recipe ("
                   + "; ".join(f"{k}: {v.title}" for k, v in PRESETS.items()) + "); other flags override it")
    add_field_flags(p, TrainConfig)
    p.set_defaults(func=cmd_train)


def _runs_and_summary_parsers(add_parser: AddParser) -> None:
    p = add_parser("runs", help="list runs (or delete one)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--delete", metavar="NAME")
    p.set_defaults(func=cmd_runs)

    p = add_parser("summary", help="each layer's output shape, parameters and multiply-adds")
    p.add_argument("variant", choices=list(VARIANTS))
    p.add_argument("--norm", default=None, choices=NORMS, help="default: lrn (imagenet: none)")
    p.set_defaults(func=cmd_summary)


def _sharing_parsers(add_parser: AddParser) -> None:
    """export and import: a run as one archive, to share."""
    p = add_parser("export", help="write a run as one archive to share (config, curves, result, environment, "
                   "weights)")
    p.add_argument("run", help="a run name in the runs folder")
    p.add_argument("-o", "--out", help="archive file (default: RUN.run.zip here)")
    p.set_defaults(func=cmd_export)

    p = add_parser("import", help="add a shared run archive to the runs folder (checked, nothing run from it)")
    p.add_argument("archive", help="a .run.zip written by export (or the app's Export button)")
    p.add_argument("--name", help="the run's name here (default: its own, numbered if taken)")
    p.set_defaults(func=cmd_import)


def _model_parsers(add_parser: AddParser) -> None:
    """eval and predict: a model from a run, a weights file or the demo."""
    for name, func, text in (("eval", cmd_eval, "test accuracy of a run or weights file"),
                             ("predict", cmd_predict, "classify image files")):
        p = add_parser(name, help=text)
        p.add_argument("--run", help="a run name in the runs folder")
        p.add_argument("--weights", help="a .safetensors (or weights-only .pt) file; default: the demo model")
        if name == "eval":
            p.add_argument("--data", help="dataset folder (default: $ALEXNET_DATA, usual places, sample)")
        else:
            p.add_argument("images", nargs="+")
            p.add_argument("--top", type=int, default=3)
            p.add_argument("--imagenet", action="store_true", help="torchvision's ImageNet AlexNet (1000 classes); "
                           "--weights names its file, default: torch's hub cache (python -m alexnet download "
                           "--imagenet fetches it)")
        p.set_defaults(func=func)


def _analyse_parser(add_parser: AddParser) -> None:
    p = add_parser("analyse", help="test-set probabilities, top-nine images or activation maximisation of a "
                   "model, kept in its analysis folder", description=
                   "What the Evaluate page computes in the background, kept for the next visit: a run's in "
                   "runs/NAME/analysis/, other weights' in the runs folder's .analysis/ (by the file's hash).")
    p.add_argument("task", choices=list(analysis_jobs.KINDS),
                   help="probabilities: every test image's; top-images: the nine test images that excite each "
                        "channel of each conv layer most; maximise: a picture that excites a channel or a class")
    p.add_argument("--run", help="a run name in the runs folder")
    p.add_argument("--weights", help="a .safetensors (or weights-only .pt) file; default: the demo model")
    p.add_argument("--data", help="dataset folder (default: the run's, else $ALEXNET_DATA, usual places, sample)")
    p.add_argument("--layer", help="maximise: conv1..conv5")
    p.add_argument("--channel", type=int, help="maximise: the layer's channel")
    p.add_argument("--class", dest="klass", type=int, help="maximise: a class index instead of a channel")
    p.add_argument("--steps", type=int, default=STEPS, help=f"maximise: Adam steps (default: the app's, {STEPS})")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = torch's default")
    p.set_defaults(func=cmd_analyse)

def _experiment_parser(add_parser: AddParser) -> None:
    p = add_parser("experiment", help="paired LRN-versus-BN runs over seeds, and their verdict", description=
                   "Queue one run per norm (LRN, BN) and seed: same variant, data order, seed and schedule, "
                   "differing in the norm and, by default (recipe tuned), in the peak learning rate that the same "
                   "range test found for each norm first (or, with another --recipe, in what that recipe names). "
                   "Each run (and each range test) takes the first free device (with --device auto, any free GPU), "
                   "so on a machine with several GPUs they train side by side; --wait prints the comparison when "
                   "they end.")
    add_field_flags(p, ExperimentPlan, EXPERIMENT_FLAG_NAMES, choices={
        "variant": COMPARABLE_VARIANTS, "recipe": {k: v.title for k, v in RECIPES.items()}, "precision": PRECISIONS})
    p.add_argument("--name", help="experiment name (default lrn-vs-bn-VARIANT, numbered)")
    p.add_argument("--wait", action="store_true", help="wait for the runs and print the comparison")
    p.add_argument("--timeout", type=float, default=24 * 3600, help="seconds --wait waits at most")
    p.add_argument("--report", metavar="NAME", help="print an existing experiment's comparison")
    p.add_argument("--resume", metavar="NAME", help="continue an experiment whose search or queueing stopped: "
                   "the range tests not yet recorded, then the runs not yet queued")
    p.add_argument("--list", action="store_true", help="list the experiments")
    p.set_defaults(func=cmd_experiment)


def _lr_find_parser(add_parser: AddParser) -> None:
    defaults = lr_finder.RangeTestSettings()
    p = add_parser("lr-find", help="a learning-rate range test: loss against rate, and a suggested peak rate",
                   description="Train a config's model for a few steps on the training split while its learning "
                   "rate rises exponentially from --start to --end (no schedule), then print the smoothed loss "
                   f"against the rate and the suggested peak rate: {lr_finder.RULE_TEXT}. Every TrainConfig field "
                   "is a flag, as for train. Writes nothing.")
    p.add_argument("--preset", choices=list(PRESETS), help="start from a named recipe; other flags override it")
    add_field_flags(p, TrainConfig)
    p.add_argument("--start", type=float, default=defaults.start, help="the first step's rate")
    p.add_argument("--end", type=float, default=defaults.end, help="the last step's rate")
    p.add_argument("--steps", type=int, default=defaults.steps, help="steps from start to end, one batch each")
    p.add_argument("--smoothing", type=float, default=defaults.smoothing,
                   help="weight of the debiased exponential average of the losses")
    p.add_argument("--divergence", type=float, default=defaults.divergence,
                   help="stop once the smoothed loss exceeds this many times its minimum")
    p.add_argument("--json", action="store_true", help="print the whole curve as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--job", help=argparse.SUPPRESS)  # lr_search.start's background process
    p.set_defaults(func=cmd_lr_find)


def _data_parsers(add_parser: AddParser) -> None:
    """download and sample: datasets and weights where the app finds them."""
    p = add_parser("download", help="download CIFAR-10 (online) where the app finds it")
    p.add_argument("--data", help="target folder (default: ~/.cache/alexnet-lab)")
    p.add_argument("--imagenet", action="store_true", help="instead, torchvision's ImageNet AlexNet weights (233 MB) "
                   "into torch's hub cache ($TORCH_HOME/hub/checkpoints)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_download)

    p = add_parser("sample", help="remake the embedded sample (assets/cifar10-sample) from a CIFAR-10 folder",
                   description="Write the first N images of each class of each split of a CIFAR-10 folder as "
                   "lossless WebP mosaics plus sample.json (labels, source indices). The shipped sample is "
                   "--from ../shared/data/cifar-10-mini with the defaults.")
    p.add_argument("--from", dest="source", required=True, metavar="DIR",
                   help="folder holding cifar-10-batches-py (the full set or a subset)")
    p.add_argument("--out", default=None, help="where to write (default: assets/cifar10-sample)")
    p.add_argument("--train-per-class", type=int, default=200)
    p.add_argument("--test-per-class", type=int, default=100)
    p.set_defaults(func=cmd_sample)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: each subcommand's flags, its `func` the `cmd_` function that runs it."""
    parser = argparse.ArgumentParser(prog="python -m alexnet", description=__doc__)
    parser.add_argument("--runs", default=None, help="runs folder (default: $ALEXNET_RUNS or ./runs)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_train_parser, _runs_and_summary_parsers, _sharing_parsers, _model_parsers, _analyse_parser,
                _experiment_parser, _lr_find_parser,
                _data_parsers):
        add(sub.add_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, TimeoutError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
