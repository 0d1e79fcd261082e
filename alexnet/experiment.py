"""The paired LRN-versus-BN experiment: plan it, queue its runs, find them again, and sum them up.

A plan becomes one run per (norm, seed): the same variant, data split and order, augmentation,
schedule and initial weights (the seed fixes them all, and both norms draw the same weights for
their shared layers), differing only in `norm`, or, with a recipe other than "same", in the
optimizer settings that recipe names. Each run is started through `jobs.start` and waits in the
queues of the devices it may take (queues.py): with device "auto" on a machine with several GPUs
they spread over the free GPUs, one run a GPU; on one device they take turns. Which of a machine's
(alike) devices a run takes, and when, changes nothing it computes (its seed fixes every random
draw), so the verdict is the one the runs give one after another.

The experiment is recorded in `<runs>/.experiments/<name>.json` (its plan, recipe and run
names), apart from the runs' own configs, so the runs stay ordinary runs that every page shows
and the Compare page can still group them. Runs are named `<experiment>-<norm>-s<seed>`.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import compare, jobs
from .config import TrainConfig
from .models import VARIANTS
from .norms import NORM_SHORT_LABELS
from .runs import DONE_STATES, Run, atomic_write_json, check_name, load_run, runs_root, slugify

__all__ = ["PAIRED_NORMS", "COMPARABLE_VARIANTS", "Recipe", "RECIPES", "ExperimentPlan", "PlannedRun", "Experiment", "planned_runs", "launch",
           "load", "list_experiments", "experiments_dir", "free_name", "Arm", "ExperimentSummary", "summarize",
           "active_runs", "wait", "report"]

PAIRED_NORMS = ("lrn", "bn")    # the two arms, in this order in every table
COMPARABLE_VARIANTS = tuple(name for name, spec in VARIANTS.items() if set(PAIRED_NORMS) <= set(spec.norms))
EXPERIMENTS_DIR = ".experiments"


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    description: str
    per_norm: dict[str, dict[str, Any]]   # TrainConfig values that differ by norm (empty: none)

    @property
    def only_norm_differs(self) -> bool:
        return not any(self.per_norm.values())


# Shared by every recipe: LSUV init (every layer at one scale whatever the norm, the loss starting at ln 10: see
# initialization.py), SGD with momentum, one-cycle, the classic crop + flip augmentation.
BASE: dict[str, Any] = dict(init="lsuv", optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=5e-4,
                            schedule="onecycle", dropout=0.5, crop_padding=4, flip=True, rotate_degrees=0.0, zoom=0.0,
                            label_smoothing=0.0, val_fraction=0.1)

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("same", "one recipe for both: only the norm differs",
           "Both norms train with the same recipe: Kaiming-normal init, SGD with momentum 0.9, one-cycle schedule "
           "to a peak learning rate of 0.02, weight decay 5e-4, random crops (4 px padding) and flips. 0.02 is a "
           "rate at which LRN trains (on the mini subset: 55% in 12 epochs with Kaiming init, 16% with PyTorch's "
           "default init); batch norm tolerates a wide range of rates (for the 0.05 BN was measured at, pick 'each "
           "norm at its own learning rate'). The difference measures the norm, nothing else.",
           {"lrn": {}, "bn": {}}),
    Recipe("own-rate", "each norm at its own learning rate",
           "The same recipe, but each norm at the peak rate it trains best with here: LRN at 0.02, BN at 0.05 "
           "(batch norm's paper argues that it allows higher rates). The difference then belongs to the norm "
           "together with its learning rate.",
           {"lrn": {"lr": 0.02}, "bn": {"lr": 0.05}}),
    Recipe("papers", "each with the optimizer of its era",
           "LRN with SGD + momentum (peak 0.02), as the 2012 paper trained AlexNet; BN with the Adam family "
           "(AdamW, peak 1e-3), as the BN reimplementations of AlexNet on CIFAR-10 train (the 'Revisiting "
           "AlexNet' report used Adam). Schedule, init and augmentation stay shared. The difference belongs to "
           "the norm together with its optimizer.",
           {"lrn": {}, "bn": {"optimizer": "adamw", "lr": 1e-3}}),
)}


@dataclass
class ExperimentPlan:
    """What a person chooses; everything else comes from the recipe. Each field is a flag of `experiment`."""
    variant: str = "cifar"          # cifar: 32x32, minutes per run on a CPU; paper: 227x227, a GPU job
    seeds: int = 3                  # how many seeds (first_seed, first_seed + 1, ...): an LRN and a BN run each
    first_seed: int = 0             # the seed of the first pair
    epochs: int = 12                # passes over the training split, in every run
    recipe: str = "same"            # what may differ besides the norm
    batch_size: int = 128           # images per step
    max_train_images: int = 0       # 0 = all; a cap for quick experiments
    data_dir: str | None = None     # dataset folder; none given: each run finds one as `train` does
    device: str = "auto"            # auto | cpu | cuda | cuda:N | mps; auto and cuda: each run takes a free GPU
    precision: str = "auto"         # auto (bf16 where fast, else fp32) | fp32 | bf16 | fp16 (CUDA)
    threads: int = 0                # CPU threads per run; 0 = torch's default
    log_every: int = 10             # steps between step events in each run's metrics.jsonl

    def problems(self) -> list[str]:
        p = []
        if self.recipe not in RECIPES:
            p.append(f"recipe {self.recipe!r} is unknown (choose {', '.join(RECIPES)})")
        if not 1 <= self.seeds <= 10:
            p.append(f"seeds must be 1 to 10, got {self.seeds}")
        if self.first_seed < 0:
            p.append(f"the first seed must not be negative, got {self.first_seed}")
        return p


@dataclass(frozen=True)
class PlannedRun:
    run: str
    norm: str
    seed: int
    config: TrainConfig


def planned_runs(plan: ExperimentPlan, name: str) -> list[PlannedRun]:
    """One config per (seed, norm), seeds outermost so that the pairs come in order; each config validated."""
    problems = plan.problems()
    if problems:
        raise ValueError("invalid experiment: " + "; ".join(problems))
    recipe = RECIPES[plan.recipe]
    out = []
    for seed in range(plan.first_seed, plan.first_seed + plan.seeds):
        for norm in PAIRED_NORMS:
            config = TrainConfig(**{**BASE, **recipe.per_norm[norm]}, variant=plan.variant, norm=norm, seed=seed,
                                 epochs=plan.epochs, batch_size=plan.batch_size,
                                 max_train_images=plan.max_train_images, data_dir=plan.data_dir, device=plan.device,
                                 precision=plan.precision, threads=plan.threads, log_every=plan.log_every)
            config.validate()
            out.append(PlannedRun(check_name(f"{name}-{norm}-s{seed}"), norm, seed, config))
    return out


@dataclass
class Experiment:
    """The record in `<runs>/.experiments/<name>.json`."""
    name: str
    created: float
    plan: dict[str, Any]
    recipe: str
    recipe_description: str
    runs: list[dict[str, Any]] = field(default_factory=list)   # {"run", "norm", "seed"}

    @property
    def seeds(self) -> list[int]:
        return sorted({r["seed"] for r in self.runs})


def experiments_dir(root: str | Path | None = None) -> Path:
    return runs_root(root) / EXPERIMENTS_DIR


def _record_path(root: str | Path | None, name: str) -> Path:
    return experiments_dir(root) / f"{check_name(name)}.json"


def free_name(root: str | Path | None, plan: ExperimentPlan, base: str | None = None) -> str:
    """`base` (default lrn-vs-bn-<variant>), numbered when its record or any of its run folders exists."""
    base = slugify(base or f"lrn-vs-bn-{plan.variant}")[:60]
    folder = runs_root(root)
    n = 1
    while True:
        name = base if n == 1 else f"{base}-{n}"
        runs = [f"{name}-{norm}-s{seed}" for seed in range(plan.first_seed, plan.first_seed + plan.seeds)
                for norm in PAIRED_NORMS]
        if not _record_path(root, name).exists() and not any((folder / r).exists() for r in runs):
            return name
        n += 1


def save(root: str | Path | None, experiment: Experiment) -> None:
    path = _record_path(root, experiment.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, asdict(experiment))


def load(root: str | Path | None, name: str) -> Experiment:
    path = _record_path(root, name)
    try:
        return Experiment(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise FileNotFoundError(f"no experiment named {name!r} in {path.parent}") from None


def list_experiments(root: str | Path | None = None) -> list[Experiment]:
    """Every recorded experiment, newest first; unreadable records are skipped."""
    folder = experiments_dir(root)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("*.json"):
        try:
            found.append(Experiment(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(found, key=lambda e: e.created, reverse=True)


Starter = Callable[[TrainConfig, str, Path], str]


def launch(plan: ExperimentPlan, root: str | Path | None = None, name: str | None = None,
           start: Starter | None = None) -> Experiment:
    """Record the experiment and queue its runs (each its own process, on the first free device it may take).

    `start(config, run_name, root)` defaults to `jobs.start`; nothing is written if the plan is invalid.
    """
    start = start or jobs.start
    folder = runs_root(root)
    name = check_name(name) if name else free_name(folder, plan)
    planned = planned_runs(plan, name)
    if _record_path(folder, name).exists():
        raise FileExistsError(f"an experiment named {name!r} already exists")
    taken = [p.run for p in planned if (folder / p.run).exists()]
    if taken:
        raise FileExistsError(f"run folders already exist: {', '.join(taken)}")
    recipe = RECIPES[plan.recipe]
    experiment = Experiment(name, time.time(), asdict(plan), recipe.name, recipe.description,
                            [{"run": p.run, "norm": p.norm, "seed": p.seed} for p in planned])
    save(folder, experiment)
    started = []
    try:
        for p in planned:
            start(p.config, p.run, folder)
            started.append(p)
    finally:
        if len(started) < len(planned):  # keep the record true: list only the runs that exist
            experiment.runs = [{"run": p.run, "norm": p.norm, "seed": p.seed} for p in started]
            save(folder, experiment)
    return experiment


# ---------------------------------------------------------------- the results

@dataclass
class Arm:
    """The runs of one norm."""
    norm: str
    runs: list[Run]

    @property
    def label(self) -> str:
        return NORM_SHORT_LABELS.get(self.norm, self.norm)

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.state == "finished" and r.result]

    def values(self, key: str) -> list[float]:
        values = [r.result.get(key) for r in self.finished]
        return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _ended(states: dict[str, int], missing: list[str], total: int) -> bool:
    """Every recorded run is done (finished, stopped or failed) or deleted."""
    return sum(states.get(s, 0) for s in DONE_STATES) + len(missing) == total


@dataclass
class ExperimentSummary:
    experiment: Experiment
    arms: dict[str, Arm]
    missing: list[str]              # recorded runs whose folders are gone
    states: dict[str, int]          # how many runs are in each state
    verdict: compare.Verdict
    pairs: list[dict[str, Any]]     # per seed: test accuracy of each norm and the difference
    datasets: list[str]

    @property
    def total(self) -> int:
        return len(self.experiment.runs)

    @property
    def finished(self) -> int:
        return self.states.get("finished", 0)

    @property
    def done(self) -> bool:
        return _ended(self.states, self.missing, self.total)

    @property
    def runs(self) -> list[Run]:
        return [r for arm in self.arms.values() for r in arm.runs]


def summarize(experiment: Experiment, root: str | Path | None = None) -> ExperimentSummary:
    """Read the experiment's runs and sum them up: states, per-seed pairs, mean and spread, the verdict."""
    folder = runs_root(root)
    arms = {norm: Arm(norm, []) for norm in PAIRED_NORMS}
    missing, states = [], Counter()
    by_seed: dict[int, dict[str, Run]] = {}
    for entry in experiment.runs:
        try:
            run = load_run(folder / entry["run"])
        except FileNotFoundError:
            missing.append(entry["run"])
            continue
        arms.setdefault(entry["norm"], Arm(entry["norm"], [])).runs.append(run)
        states[run.state] += 1
        by_seed.setdefault(entry["seed"], {})[entry["norm"]] = run
    pairs = []
    for seed in sorted(by_seed):
        row: dict[str, Any] = {"seed": seed}
        for norm in PAIRED_NORMS:
            run = by_seed[seed].get(norm)
            row[norm] = (run.result or {}).get("test_accuracy") if run and run.state == "finished" else None
        row["difference"] = row["bn"] - row["lrn"] if row["lrn"] is not None and row["bn"] is not None else None
        pairs.append(row)
    lrn, bn = arms["lrn"], arms["bn"]
    finished = lrn.finished + bn.finished
    datasets = sorted({r.result.get("dataset", "?") for r in finished})
    test_images = min((r.result.get("test_images", 0) for r in finished), default=None)
    result = compare.verdict(lrn.values("test_accuracy"), bn.values("test_accuracy"), lrn.label, bn.label,
                             "test accuracy", test_images)
    text = result.text
    recipe = RECIPES.get(experiment.recipe)
    if recipe and not recipe.only_norm_differs and result.level not in ("no data",):
        text += f" This recipe ({recipe.title}) changes more than the norm, so the difference belongs to the pair."
    if len(datasets) > 1:
        text += f" Careful: the runs were tested on different datasets ({', '.join(datasets)})."
    total = len(experiment.runs)
    if not _ended(states, missing, total) and result.level != "no data":
        text = f"So far ({states.get('finished', 0)} of {total} runs finished): " + text
    failed = states.get("failed", 0) + states.get("stopped", 0)
    if failed:
        text += (f" {failed} run{'s' if failed > 1 else ''} did not finish (stopped or failed) and "
                 f"{'are' if failed > 1 else 'is'} left out.")
    verdict = compare.Verdict(result.level, text, result.difference, result.test)
    return ExperimentSummary(experiment, arms, missing, dict(states), verdict, pairs, datasets)


def active_runs(experiment: Experiment, root: str | Path | None = None) -> frozenset[str]:
    """The experiment's runs that a process holds or is about to (queued or running): the page polls while any is."""
    folder = runs_root(root)
    return frozenset(entry["run"] for entry in experiment.runs if (folder / entry["run"]).is_dir()
                     and load_run(folder / entry["run"], with_metrics=False).state not in DONE_STATES)


def wait(experiment: Experiment, root: str | Path | None = None, timeout: float = 24 * 3600,
         on_change: Callable[[ExperimentSummary], None] | None = None, poll: float = 2.0) -> ExperimentSummary:
    """Block until every run has finished, stopped or failed; `on_change` hears each change of the states."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        summary = summarize(experiment, root)
        if summary.states != last and on_change:
            on_change(summary)
        last = summary.states
        if summary.done:
            return summary
        if time.monotonic() > deadline:
            raise TimeoutError(f"experiment {experiment.name!r} did not finish within {timeout:.0f}s")
        time.sleep(poll)


def report(summary: ExperimentSummary) -> str:
    """The summary as plain text for the command line."""
    e = summary.experiment
    plan = e.plan
    lines = [f"experiment {e.name}: {plan['variant']} variant, {plan['epochs']} epochs, seeds {e.seeds}, "
             f"recipe '{e.recipe}'",
             f"  {e.recipe_description}",
             "  states: " + ", ".join(f"{n} {s}" for s, n in sorted(summary.states.items()))
             + (f", {len(summary.missing)} deleted" if summary.missing else ""),
             "",
             f"  {'seed':>4}  {'LRN test':>9}  {'BN test':>9}  {'BN - LRN':>9}"]
    for row in summary.pairs:
        cells = [f"{row[k]:9.2%}" if row[k] is not None else f"{'-':>9}" for k in PAIRED_NORMS]
        diff = f"{row['difference'] * 100:+8.1f}p" if row["difference"] is not None else f"{'-':>9}"
        lines.append(f"  {row['seed']:>4}  {cells[0]}  {cells[1]}  {diff}")
    for arm in summary.arms.values():
        accs = arm.values("test_accuracy")
        if accs:
            mean, std = compare.mean_std(accs)
            lines.append(f"  {arm.label}: mean {mean:.2%}, standard deviation {std * 100:.2f} points over {len(accs)} "
                         f"seed{'s' if len(accs) > 1 else ''}")
    if summary.datasets:
        lines.append(f"  dataset: {', '.join(summary.datasets)}")
    lines += ["", summary.verdict.text]
    return "\n".join(lines)
