"""The paired LRN-versus-BN experiment: plan it, queue its runs, find them again, and sum them up.

A plan becomes one run per (norm, seed): the same variant, data split and order, augmentation,
schedule and initial weights (the seed fixes them all: both norms draw the same weights for their
shared layers, which the default "lsuv" init then scales by one number per layer so that each build
starts at unit activations), differing only in `norm`, or, with a recipe other than "same", in the
optimizer settings that recipe names. Each run is started through `jobs.start` and waits in the
queues of the devices it may take (queues.py): with device "auto" on a machine with several GPUs
they spread over the free GPUs, one run a GPU; on one device they take turns. Which of a machine's
(alike) devices a run takes, and when, changes nothing it computes (its seed fixes every random
draw), so the verdict is the one the runs give one after another.

The default recipe, "tuned", makes the comparison fair by construction: each norm's peak rate
comes from the same budgeted search, a learning-rate range test (`lr_finder`) with the same
steps, range, images and seed on the training split, one per norm whatever the number of seeds.
The searches run in a background process (`conduct`), each test waiting in its device's queue as
a run does, which then queues the runs; each norm's result goes into the record as soon as it is
known, and the tests themselves are kept by `lr_search`, so a reload, a second tab or a crash
(`python -m alexnet experiment --resume NAME` continues) never runs a search twice or loses one.

The experiment is recorded in `<runs>/.experiments/<name>.json` (its plan, recipe, search and
run names), apart from the runs' own configs, so the runs stay ordinary runs that every page
shows and the Compare page can still group them. Runs are named `<experiment>-<norm>-s<seed>`.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from . import compare, jobs, lr_search
from .config import TrainConfig, with_variant
from .lr_finder import RULE_TEXT, RangeTest, RangeTestSettings
from .models import VARIANTS
from .norms import NORM_SHORT_LABELS
from .runs import (ACTIVE_STATES, DONE_STATES, Run, atomic_write_json, check_name, load_run, pid_alive,
                   process_identity, runs_root, slugify)

__all__ = ["recipe_config", "PAIRED_NORMS", "COMPARABLE_VARIANTS", "Recipe", "RECIPES", "ExperimentPlan", "PlannedRun", "Experiment",
           "planned_runs", "launch", "load", "list_experiments", "experiments_dir", "free_name", "Arm",
           "ExperimentSummary", "summarize", "active_runs", "wait", "report", "conduct", "resume", "search_config",
           "search_settings", "search_state", "search_rows", "search_news", "search_progress", "fairness_note"]

PAIRED_NORMS = ("lrn", "bn")    # the two arms, in this order in every table
COMPARABLE_VARIANTS = tuple(name for name, spec in VARIANTS.items() if set(PAIRED_NORMS) <= set(spec.norms))
EXPERIMENTS_DIR = ".experiments"


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    description: str
    per_norm: dict[str, dict[str, Any]]   # TrainConfig values that differ by norm (empty: none)
    searched: bool = False                 # each norm's peak rate comes from its own range test, run at launch

    @property
    def only_norm_differs(self) -> bool:
        return not self.searched and not any(self.per_norm.values())


# Shared by every recipe: LSUV init (every layer at one scale whatever the norm, the loss starting at ln 10: see
# initialization.py), SGD with momentum, one-cycle, the classic crop + flip augmentation.
BASE: dict[str, Any] = dict(init="lsuv", optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=5e-4,
                            schedule="onecycle", dropout=0.5, crop_padding=4, flip=True, rotate_degrees=0.0, zoom=0.0,
                            label_smoothing=0.0, val_fraction=0.1)

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("tuned", "each norm at the rate its own range test suggests",
           "Each norm gets its own peak learning rate from the same budgeted search: a learning-rate range test "
           "(Smith 2017; fastai's lr_find) on the training split, with the same steps, range, images and seed for "
           f"both norms, its suggestion {RULE_TEXT}. Everything else is shared: LSUV init, SGD with "
           "momentum 0.9 and weight decay 5e-4, the one-cycle schedule, random crops (4 px padding) and flips, the "
           "epochs, batch, data split and seeds. The searches run first, in the background, once per norm whatever "
           "the number of seeds; then the runs queue. The difference measures each norm at a rate found for it "
           "by the same means.",
           {"lrn": {}, "bn": {}}, searched=True),
    Recipe("same", "one recipe for both: only the norm differs",
           "Both norms train with the same recipe: LSUV init, SGD with momentum 0.9, one-cycle schedule to a "
           "peak learning rate of 0.02, weight decay 5e-4, random crops (4 px padding) and flips. 0.02 is a rate "
           "at which every norm learns on both variants (the project's recipe check); batch norm tolerates higher "
           "rates on the cifar variant. Only the norm differs, but one shared rate may suit one norm better than "
           "the other: the difference measures the norms at 0.02, not each at its best.",
           {"lrn": {}, "bn": {}}),
    Recipe("own-rate", "each norm at its own learning rate",
           "The same recipe, but each norm at a peak rate of its own: LRN at 0.02, BN at 0.05 on the cifar "
           "variant (batch norm's paper argues that it allows higher rates); on the paper variant BN takes that "
           "variant's default 0.02, as 0.05 diverged there. The rates are fixed, not searched: the difference "
           "belongs to the norm together with its learning rate.",
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
    recipe: str = "tuned"           # what may differ besides the norm
    batch_size: int = 128           # images per step
    max_train_images: int = 0       # 0 = all; a cap for quick experiments
    data_dir: str | None = None     # dataset folder; none given: each run finds one as `train` does
    device: str = "auto"            # auto | cpu | cuda | cuda:N | mps; auto and cuda: each run takes a free GPU
    precision: str = "auto"         # auto (bf16 where fast, else fp32) | fp32 | bf16 | fp16 (CUDA)
    threads: int = 0                # CPU threads per run; 0 = torch's default
    log_every: int = 10             # steps between step events in each run's metrics.jsonl
    search_steps: int = 100         # the tuned recipe's budget: range-test steps per norm, one batch each

    def problems(self) -> list[str]:
        p = []
        if not 5 <= self.search_steps <= 10_000:
            p.append(f"search steps must be 5 to 10,000, got {self.search_steps}")
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


def recipe_config(recipe: str, norm: str, **settings: Any) -> TrainConfig:
    """What a recipe trains a norm with: the shared base, the recipe's values for that norm, then `settings`.

    The recipes' rates were set on the cifar variant; on another, a rate at the cifar variant's default SGD rate
    (own-rate's BN) becomes that variant's (`config.with_variant`)."""
    config = TrainConfig(**{**BASE, **RECIPES[recipe].per_norm.get(norm, {}), "norm": norm})
    config = with_variant(config, settings.get("variant", config.variant))
    return replace(config, **settings)


def _config(plan: ExperimentPlan, norm: str, seed: int, lr: float | None = None) -> TrainConfig:
    return recipe_config(plan.recipe, norm, **({"lr": lr} if lr is not None else {}), variant=plan.variant,
                         seed=seed, epochs=plan.epochs, batch_size=plan.batch_size,
                         max_train_images=plan.max_train_images, data_dir=plan.data_dir, device=plan.device,
                         precision=plan.precision, threads=plan.threads, log_every=plan.log_every).validate()


def _checked(plan: ExperimentPlan) -> Recipe:
    problems = plan.problems()
    if problems:
        raise ValueError("invalid experiment: " + "; ".join(problems))
    return RECIPES[plan.recipe]


def planned_runs(plan: ExperimentPlan, name: str, rates: dict[str, float] | None = None) -> list[PlannedRun]:
    """One config per (seed, norm), seeds outermost so that the pairs come in order; each config validated.

    `rates`: each norm's searched peak rate, which the tuned recipe's runs need.
    """
    recipe = _checked(plan)
    if recipe.searched and not (rates and all(rates.get(norm) for norm in PAIRED_NORMS)):
        raise ValueError(f"the {recipe.name} recipe's runs need each norm's searched rate, got {rates}")
    return [PlannedRun(check_name(f"{name}-{norm}-s{seed}"), norm, seed,
                       _config(plan, norm, seed, rates[norm] if recipe.searched else None))
            for seed in range(plan.first_seed, plan.first_seed + plan.seeds) for norm in PAIRED_NORMS]


def search_config(plan: ExperimentPlan, norm: str) -> TrainConfig:
    """The config a norm's range test runs: the arm's first seed, everything its runs share but the rate."""
    _checked(plan)
    return _config(plan, norm, plan.first_seed)


def search_settings(plan: ExperimentPlan) -> RangeTestSettings:
    """The same range and budget for every norm: only the steps are the plan's to choose."""
    return RangeTestSettings(steps=plan.search_steps).validate()


@dataclass
class Experiment:
    """The record in `<runs>/.experiments/<name>.json`."""
    name: str
    created: float
    plan: dict[str, Any]
    recipe: str
    recipe_description: str
    runs: list[dict[str, Any]] = field(default_factory=list)   # {"run", "norm", "seed"}: the runs that exist
    # The tuned recipe's search: {"settings", "state", "norm", "step", "reason", "pid", "pid_identity",
    # "results": {norm: RangeTest.to_dict()}}; None for the other recipes.
    search: dict[str, Any] | None = None

    @property
    def seeds(self) -> list[int]:
        """The plan's seeds (its runs may not all exist: a search first, or a failed start)."""
        first = self.plan.get("first_seed", 0)
        return list(range(first, first + self.plan.get("seeds", 0)))


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
Conductor = Callable[[Path, str], None]


def launch(plan: ExperimentPlan, root: str | Path | None = None, name: str | None = None,
           start: Starter | None = None, conductor: Conductor | None = None) -> Experiment:
    """Record the experiment and queue its runs (each its own process, on the first free device it may take).

    `start(config, run_name, root)` defaults to `jobs.start`; nothing is written if the plan is invalid.
    A searched recipe queues nothing here: `conductor(root, name)` (default: `conduct` in a background
    process) runs the searches, then queues the runs, and the record says how far it got.
    """
    folder = runs_root(root)
    recipe = _checked(plan)
    name = check_name(name) if name else free_name(folder, plan)
    planned = planned_runs(plan, name, {norm: BASE["lr"] for norm in PAIRED_NORMS} if recipe.searched else None)
    if _record_path(folder, name).exists():
        raise FileExistsError(f"an experiment named {name!r} already exists")
    taken = [p.run for p in planned if (folder / p.run).exists()]
    if taken:
        raise FileExistsError(f"run folders already exist: {', '.join(taken)}")
    search = {"settings": asdict(search_settings(plan)), "state": "queued", "results": {}} if recipe.searched else None
    experiment = Experiment(name, time.time(), asdict(plan), recipe.name, recipe.description, [], search)
    save(folder, experiment)
    if recipe.searched:
        (conductor or _conduct_in_background)(folder, name)
        return load(folder, name)
    _queue(folder, experiment, planned, start or jobs.start)
    return experiment


def _queue(folder: Path, experiment: Experiment, planned: list[PlannedRun], start: Starter) -> None:
    """Start each planned run the record does not list yet, listing it once started: the record lists the runs
    that exist. A run folder that exists already (made just before a crash) is listed, not started twice."""
    listed = {entry["run"] for entry in experiment.runs}
    for p in planned:
        if p.run in listed:
            continue
        if not (folder / p.run).exists():
            start(p.config, p.run, folder)
        experiment.runs.append({"run": p.run, "norm": p.norm, "seed": p.seed})
        save(folder, experiment)


# ---------------------------------------------------------------- the search, in the background

def _lock_path(folder: Path, name: str, what: str) -> Path:
    return experiments_dir(folder) / f".{check_name(name)}.{what}"


def _conduct_in_background(folder: Path, name: str) -> None:
    """Start `python -m alexnet experiment --resume NAME` (`conduct`) in its own session, logging beside the record."""
    with jobs.one_at_a_time(_lock_path(folder, name, "start.lock")):
        with open(experiments_dir(folder) / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "alexnet", "--runs", str(folder), "experiment", "--resume", name],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=Path(__file__).resolve().parent.parent)
        experiment = load(folder, name)  # the child says 'running' under the same lock, after this
        experiment.search.update(state="queued", reason="starting", pid=process.pid,
                                 pid_identity=process_identity(process.pid))
        save(folder, experiment)


def resume(root: str | Path | None, name: str) -> bool:
    """Continue an experiment whose search or queueing stopped (a crash, a kill): start its conductor again,
    unless one lives. True if one was started."""
    folder = runs_root(root)
    experiment = load(folder, name)
    if experiment.search is None or search_state(experiment)["state"] in (*ACTIVE_STATES, "finished"):
        return False
    _conduct_in_background(folder, name)
    return True


def conduct(root: str | Path | None, name: str, start: Starter | None = None,
            stop: threading.Event | None = None) -> Experiment:
    """Do what is left of an experiment: each norm's range test not yet recorded, then the runs not yet queued.

    One conductor at a time per experiment (a second waits, then finds nothing left to do). Each norm's
    result is recorded as soon as it is known; the test itself runs once per config (`lr_search.ensure`).
    """
    folder = runs_root(root)
    with jobs.one_at_a_time(_lock_path(folder, name, "lock")):
        with jobs.one_at_a_time(_lock_path(folder, name, "start.lock")):  # after the starter's own write
            experiment = load(folder, name)
            plan = ExperimentPlan(**experiment.plan)
            if experiment.search is not None and experiment.search.get("state") != "finished":
                _say(folder, experiment, "running", reason="")
        rates = None
        if experiment.search is not None:
            rates = _search(folder, experiment, plan, stop or threading.Event())
            if rates is None:
                return experiment
        _queue(folder, experiment, planned_runs(plan, name, rates), start or jobs.start)
        if experiment.search is not None:
            _say(folder, experiment, "finished", reason="", norm=None)
        return experiment


def _say(folder: Path, experiment: Experiment, state: str, **extra: Any) -> None:
    """The search's state, by the conductor (this process), into the record."""
    experiment.search.update(state=state, pid=os.getpid(), pid_identity=process_identity(os.getpid()), **extra)
    save(folder, experiment)


def _search(folder: Path, experiment: Experiment, plan: ExperimentPlan, stop: threading.Event
            ) -> dict[str, float] | None:
    """Each norm's range test (those not yet recorded), recorded one by one; the rates, or None if one failed."""
    settings = RangeTestSettings(**experiment.search["settings"])
    results = experiment.search.setdefault("results", {})
    for norm in PAIRED_NORMS:
        if norm not in results:

            def progress(update: dict, norm: str = norm) -> None:
                _say(folder, experiment, "running", norm=norm, step=update.get("step", 0),
                     reason=update.get("reason", "") if update["state"] == "queued" else "")

            try:
                result = lr_search.ensure(folder, search_config(plan, norm), settings, stop, progress)
            except InterruptedError as err:
                _say(folder, experiment, "stopped", reason=f"the search was stopped ({err}); continue it to go on")
                return None
            except (lr_search.RangeTestFailed, OSError, ValueError) as err:
                _say(folder, experiment, "failed", reason=f"the range test of {NORM_SHORT_LABELS[norm]} could not run: "
                                                          f"{err}")
                return None
            results[norm] = result.to_dict()
            _say(folder, experiment, "running", norm=norm, step=result.steps)
        if results[norm].get("suggestion") is None:  # the same test again would say the same: no rate to train at
            label = NORM_SHORT_LABELS[norm]
            _say(folder, experiment, "failed", reason=f"the range test of {label} found no rate at which the loss "
                                                      f"fell ({results[norm]['stopped']}); no runs were queued")
            return None
    return {norm: results[norm]["suggestion"] for norm in PAIRED_NORMS}


def search_state(experiment: Experiment) -> dict[str, Any]:
    """The search's state as it is: a queued or running search whose process is gone reads 'stopped'."""
    search = dict(experiment.search or {})
    if search.get("state") in ACTIVE_STATES and not pid_alive(search.get("pid"), search.get("pid_identity")):
        search.update(state="stopped", reason="the search's process ended without saying why (killed or crashed); "
                                              "continue the experiment to go on where it stopped")
    return search


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
    search: dict[str, Any] | None = None   # `search_state`: the tuned recipe's search as it is; None for others

    @property
    def total(self) -> int:
        return len(self.experiment.runs)

    @property
    def finished(self) -> int:
        return self.states.get("finished", 0)

    @property
    def searching(self) -> bool:
        """The search is still to end (queued, waiting for the device, or running)."""
        return self.search is not None and self.search.get("state") in ACTIVE_STATES

    @property
    def done(self) -> bool:
        """Nothing more will happen: the runs have ended (and the search, which may have ended them all)."""
        if self.search is not None and self.search.get("state") != "finished":
            return not self.searching
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
    finished = arms["lrn"].finished + arms["bn"].finished
    datasets = sorted({r.result.get("dataset", "?") for r in finished})
    summary = ExperimentSummary(experiment, arms, missing, dict(states), compare.Verdict("no data", ""), pairs,
                                datasets, search_state(experiment) if experiment.search is not None else None)
    summary.verdict = _verdict(summary, min((r.result.get("test_images", 0) for r in finished), default=None))
    return summary


def _verdict(summary: ExperimentSummary, test_images: int | None) -> compare.Verdict:
    """The comparison's verdict, with what the recipe shared and tuned, how far the runs are, and what is missing."""
    lrn, bn, states = summary.arms["lrn"], summary.arms["bn"], summary.states
    result = compare.verdict(lrn.values("test_accuracy"), bn.values("test_accuracy"), lrn.label, bn.label,
                             "test accuracy", test_images)
    text = result.text
    if result.level != "no data":
        text += " " + fairness_note(summary.experiment)
    elif summary.search is not None and summary.search.get("state") != "finished":
        text = search_news(summary.search) + " " + text
    if len(summary.datasets) > 1:
        text += f" Careful: the runs were tested on different datasets ({', '.join(summary.datasets)})."
    if not summary.done and result.level != "no data":
        text = f"So far ({states.get('finished', 0)} of {summary.total} runs finished): " + text
    failed = states.get("failed", 0) + states.get("stopped", 0)
    if failed:
        text += (f" {failed} run{'s' if failed > 1 else ''} did not finish (stopped or failed) and "
                 f"{'are' if failed > 1 else 'is'} left out.")
    return compare.Verdict(result.level, text, result.difference, result.test)


def search_news(search: dict[str, Any]) -> str:
    """Where a search that has not finished is, in a sentence."""
    state = search.get("state")
    if state in ("failed", "stopped"):
        return f"The learning-rate search {state}: {search.get('reason') or 'no reason recorded'}."
    done = [NORM_SHORT_LABELS[n] for n in PAIRED_NORMS if n in search.get("results", {})]
    now = search.get("norm")
    where = f"{NORM_SHORT_LABELS.get(now, now)} at step {search.get('step', 0)} of {search['settings']['steps']}" \
        if state == "running" and now and now not in search.get("results", {}) else search.get("reason") or state
    return (f"Searching each norm's learning rate first ({where}"
            + (f"; {' and '.join(done)} done" if done else "") + "); the runs queue after it.")


def search_progress(search: dict[str, Any]) -> float:
    """The share of the search's steps done: the norms recorded, and the steps of the one under way."""
    steps, results = search["settings"]["steps"], search.get("results", {})
    under_way = search.get("step") or 0 if search.get("norm") not in results else 0
    return min((len(results) * steps + under_way) / (len(PAIRED_NORMS) * steps), 1.0)


def fairness_note(experiment: Experiment) -> str:
    """What the recipe shared between the norms and what it tuned or changed, for the verdict."""
    recipe = RECIPES.get(experiment.recipe)
    if recipe is None:
        return ""
    plan = experiment.plan
    if recipe.searched:
        search = experiment.search or {}
        settings = RangeTestSettings(**search["settings"]) if search.get("settings") else search_settings(
            ExperimentPlan(**plan))
        rates = ", ".join(f"{NORM_SHORT_LABELS[n]} {r['suggestion']:.3g}" for n, r in search.get("results", {}).items()
                          if r.get("suggestion"))
        seeds = plan["first_seed"], plan["first_seed"] + plan["seeds"] - 1
        return (f"Tuned: each norm's peak learning rate, by the same range test ({settings.describe()} on the "
                f"training split, seed {plan['first_seed']}; {RULE_TEXT}){': ' + rates if rates else ''}. "
                f"Shared: the init ({BASE['init']}), the optimizer (SGD, momentum {BASE['momentum']:g}, weight decay "
                f"{BASE['weight_decay']:g}), the schedule (one-cycle), the augmentation (crops and flips), "
                f"{plan['epochs']} epochs, batch {plan['batch_size']}, the data split and seeds "
                f"{seeds[0]}{f'-{seeds[1]}' if seeds[1] > seeds[0] else ''}.")
    if recipe.only_norm_differs:
        return (f"Only the norm differed, at one shared peak rate of {BASE['lr']:g}, which may favour one norm (it "
                "was picked as a rate at which LRN trains); the 'tuned' recipe gives each norm a rate searched for "
                "it.")
    return f"This recipe ({recipe.title}) changes more than the norm, so the difference belongs to the pair."


def search_rows(experiment: Experiment) -> list[dict[str, Any]]:
    """One row per norm whose range test has run: its suggested peak rate, its minimum, budget and ending."""
    rows = []
    for norm, result in (experiment.search or {}).get("results", {}).items():
        test = RangeTest.from_dict(result)
        low = test.minimum
        rows.append({"norm": NORM_SHORT_LABELS.get(norm, norm), "suggested peak rate": test.suggestion,
                     "lowest loss at": low[0] if low else None, "lowest smoothed loss": low[1] if low else None,
                     "steps": test.steps, "images": test.images, "ended": test.stopped})
    return rows


def active_runs(experiment: Experiment, root: str | Path | None = None) -> frozenset[str]:
    """What of the experiment a process holds or is about to: its queued or running runs, and '(search)' while its
    search is still to end. The page polls while any is."""
    folder = runs_root(root)
    runs = [entry["run"] for entry in experiment.runs if (folder / entry["run"]).is_dir()
            and load_run(folder / entry["run"], with_metrics=False).state not in DONE_STATES]
    searching = experiment.search is not None and search_state(experiment).get("state") in ACTIVE_STATES
    return frozenset(runs + ["(search)"] * searching)


def wait(experiment: Experiment, root: str | Path | None = None, timeout: float = 24 * 3600,
         on_change: Callable[[ExperimentSummary], None] | None = None, poll: float = 2.0) -> ExperimentSummary:
    """Block until the search (if any) and every run have ended; `on_change` hears each change of their states.

    The record is read again each time: the search's conductor adds to it as it goes.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        summary = summarize(load(root, experiment.name), root)
        now = (summary.states, (summary.search or {}).get("state"))
        if now != last and on_change:
            on_change(summary)
        last = now
        if summary.done:
            return summary
        if time.monotonic() > deadline:
            raise TimeoutError(f"experiment {experiment.name!r} did not finish within {timeout:.0f}s")
        time.sleep(poll)


def _search_lines(summary: ExperimentSummary) -> list[str]:
    search = summary.search
    if search is None:
        return []
    settings = RangeTestSettings(**search["settings"])
    lines = [f"  search ({search.get('state')}): range test, {settings.describe()} on the training split (seed "
             f"{summary.experiment.plan['first_seed']}); suggestion: {RULE_TEXT}"]
    for norm, result in search.get("results", {}).items():
        lines.append(f"    {NORM_SHORT_LABELS.get(norm, norm)}: {RangeTest.from_dict(result).summary()}")
    if search.get("state") in ("failed", "stopped"):
        lines.append(f"    {search.get('reason')}")
    return lines


def report(summary: ExperimentSummary) -> str:
    """The summary as plain text for the command line."""
    e = summary.experiment
    plan = e.plan
    lines = [f"experiment {e.name}: {plan['variant']} variant, {plan['epochs']} epochs, seeds {e.seeds}, "
             f"recipe '{e.recipe}'",
             f"  {e.recipe_description}",
             "  states: " + ", ".join(f"{n} {s}" for s, n in sorted(summary.states.items()))
             + (f", {len(summary.missing)} deleted" if summary.missing else ""),
             *_search_lines(summary),
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
