"""The LRN-versus-BN experiments that ship with the app: read-only records, each labelled with where it came from.

`assets/experiments/<name>/` is a runs folder of its own, made by `assets/experiments/make_shipped.sh`: the
experiment's record (`.experiments/<name>.json`, with the tuned recipe's range tests) and each run's folder with
its records only (`RUN_FILES`: config, metrics, status, result, environment), never its weights or resume state,
so the app's first visit to Compare has a real experiment to show in a few hundred kilobytes. Being a runs folder,
it reads with the library's own readers (`experiment.load`, `summarize`, `runs.load_run`) and with
`python -m alexnet --runs assets/experiments/NAME experiment --report NAME`.

A shipped run is shown beside a user's own under a marked name (`marked`) that no run name can take, and its
status says `shipped`, so the pages offer no action that would write to it or export weights it does not have.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from . import provenance
from .cli import experiment_command
from .experiment import (COMPARABLE_VARIANTS, EXPERIMENTS_DIR, Experiment, ExperimentPlan, ExperimentSummary,
                         experiments_dir, summarize)
from .experiment import load as load_experiment
from .runs import Run, check_name, load_run

__all__ = ["SHIPPED_DIR", "RUN_FILES", "MAKE_SCRIPT", "MADE_WITH", "Label", "Shipped", "marked", "list_shipped",
           "label", "shipped_runs", "rerun_plan", "not_shipped", "make_command", "ship"]

REPO = Path(__file__).resolve().parent.parent
SHIPPED_DIR = REPO / "assets" / "experiments"
MAKE_SCRIPT = "assets/experiments/make_shipped.sh"
# What of a run folder ships: its records. Never weights.safetensors, state.pt, analysis/ or log.txt.
RUN_FILES = ("config.json", "status.json", "metrics.jsonl", "result.json", "environment.json")
# The plan `make_shipped.sh` runs, besides the variant and the dataset: the experiment's defaults.
MADE_WITH = dict(seeds=3, epochs=12)


@dataclass(frozen=True)
class Label:
    """Where a shipped experiment came from, in words, from its own records."""
    data: str       # the dataset and the images a run trained, validated and was tested on
    hardware: str   # the device, the CPU or GPU, torch
    command: str    # the command line that made it (`cli.experiment_command`)
    date: str       # the day it was started (UTC)
    code: str       # the git commit its runs were trained at


@dataclass
class Shipped:
    """One shipped experiment: its folder (a runs folder), its record and its label."""
    root: Path
    record: Experiment
    label: Label

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def title(self) -> str:
        return marked(self.name)

    @property
    def plan(self) -> ExperimentPlan:
        return ExperimentPlan(**self.record.plan)

    def summary(self) -> ExperimentSummary:
        return summarize(self.record, self.root)

    def runs(self) -> list[Run]:
        """Its runs, read-only, under their marked names."""
        return [_read_only(load_run(self.root / entry["run"])) for entry in self.record.runs
                if (self.root / entry["run"]).is_dir()]


def marked(name: str) -> str:
    """A shipped record's name beside a user's own: with a space and brackets, which no run name has."""
    return f"{name} (shipped)"


def _read_only(run: Run) -> Run:
    return replace(run, name=marked(run.name), status={**run.status, "shipped": True})


def list_shipped(folder: str | Path = SHIPPED_DIR) -> list[Shipped]:
    """Every shipped experiment in `folder`, in the order of the variants; a folder without a readable record
    is skipped."""
    found = []
    for child in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        try:
            record = load_experiment(child, child.name)
        except (OSError, ValueError, TypeError):
            continue
        found.append(Shipped(child, record, label(record, child)))
    order = {variant: i for i, variant in enumerate(COMPARABLE_VARIANTS)}
    return sorted(found, key=lambda s: (order.get(s.record.plan.get("variant"), len(order)), s.name))


def shipped_runs(found: list[Shipped]) -> dict[str, Run]:
    """The runs of the shipped experiments by their marked names, to list beside a user's own."""
    return {run.name: run for item in found for run in item.runs()}


def label(record: Experiment, root: Path) -> Label:
    """The label from the records: the runs' data and environment, the plan's command and the record's date."""
    runs = [load_run(root / entry["run"]) for entry in record.runs if (root / entry["run"]).is_dir()]
    environments = provenance.summary([s for run in runs for s in provenance.sessions(run.path)])
    return Label(data=_data_words(runs, environments), hardware=_hardware_words(environments, runs),
                 command=experiment_command(ExperimentPlan(**record.plan)),
                 date=datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%d"),
                 code=environments.get("git_commit", "not recorded"))


def _data_words(runs: list[Run], environments: dict[str, str]) -> str:
    starts = [e for run in runs for e in run.metrics if e.get("event") == "start"]
    counts = sorted({(e["train_images"], e["val_images"], e["test_images"]) for e in starts
                     if {"train_images", "val_images", "test_images"} <= set(e)})
    dataset = environments.get("data") or ", ".join(sorted({e.get("dataset", "?") for e in starts})) or "not recorded"
    split = "; ".join(f"{t:,} training, {v:,} validation and {s:,} test images" for t, v, s in counts)
    return f"{dataset}: {split} a run" if split else dataset


def _hardware_words(environments: dict[str, str], runs: list[Run]) -> str:
    if not environments:
        return "not recorded"
    device = environments.get("device", "?")
    where = (f"{environments.get('cpu', '?')}" if device == "CPU" else
             f"{environments.get('gpus', '?')} GPU(s) on the machine, driver {environments.get('driver', '?')}, "
             f"CUDA {environments.get('cuda', '?')}")
    precisions = sorted({(run.result or {}).get("precision") for run in runs} - {None})
    return f"{device}: {where}; torch {environments.get('torch', '?')}" + "".join(f", {p}" for p in precisions)


def rerun_plan(item: Shipped, data_dir: str | None) -> ExperimentPlan:
    """The same plan (recipe, seeds, epochs, variant, batch, budget) on this machine's dataset and devices."""
    return replace(item.plan, data_dir=data_dir, device="auto")


def not_shipped(found: list[Shipped]) -> list[str]:
    """The comparable variants no shipped experiment covers yet."""
    have = {item.record.plan.get("variant") for item in found}
    return [variant for variant in COMPARABLE_VARIANTS if variant not in have]


def make_command(variant: str) -> tuple[str, str]:
    """The script that makes a variant's shipped records, and the experiment command it runs."""
    return (f"{MAKE_SCRIPT} {variant} DATA_DIR",
            experiment_command(ExperimentPlan(variant=variant, **MADE_WITH, data_dir="DATA_DIR")))


def ship(root: str | Path, name: str, folder: str | Path = SHIPPED_DIR) -> Path:
    """Copy a finished experiment's records from the runs folder `root` into `folder/<name>/`, replacing what
    was there: its record and each run's `RUN_FILES`, nothing else. Refused unless every run finished."""
    root, name = Path(root), check_name(name)
    record = load_experiment(root, name)
    summary = summarize(record, root)
    if not summary.done or summary.finished != summary.total or not summary.total:
        raise ValueError(f"experiment {name!r} has not finished every run ({summary.finished} of {summary.total}"
                         f"{', search ' + summary.search['state'] if summary.search else ''}): nothing shipped")
    target = Path(folder) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}."))
    try:
        (staging / EXPERIMENTS_DIR).mkdir()
        shutil.copy2(experiments_dir(root) / f"{name}.json", staging / EXPERIMENTS_DIR / f"{name}.json")
        for entry in record.runs:
            (staging / entry["run"]).mkdir()
            for file in RUN_FILES:
                if (root / entry["run"] / file).is_file():
                    shutil.copy2(root / entry["run"] / file, staging / entry["run"] / file)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def main(argv: list[str]) -> int:
    """`python -m alexnet.shipped RUNS NAME`: ship a finished experiment (what make_shipped.sh ends with)."""
    if len(argv) != 2:
        print("usage: python -m alexnet.shipped RUNS_FOLDER EXPERIMENT_NAME", file=sys.stderr)
        return 2
    target = ship(argv[0], argv[1])
    sizes = {path.relative_to(target).as_posix(): path.stat().st_size for path in sorted(target.rglob("*"))
             if path.is_file()}
    print(json.dumps({"shipped": str(target), "bytes": sum(sizes.values()), "files": sizes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
