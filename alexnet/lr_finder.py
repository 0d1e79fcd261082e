"""A learning-rate range test (Smith 2017, "Cyclical learning rates"; fastai's `lr_find`) on the training split.

The test takes real training steps, through the loop's own parts (`train.start_session`,
`training_batch`, `session_step`): the same model build and init, augmentation, precision,
channels_last, optimizer type, weight decay and momentum as a run of the config would take.
Only the rate differs: constant within a step, it rises exponentially from `start` to `end`
over `steps` steps (no schedule, no one-cycle momentum). The per-batch losses are smoothed with
a debiased exponential average; the test stops early once the smoothed loss exceeds
`divergence` times its minimum or a loss is no longer finite.

The suggestion follows one rule, `suggest`: the rate at the smoothed loss's minimum, divided by 3.
It stands for the PEAK of a one-cycle schedule, which spends most of its steps below its peak; the
usual rules (fastai's "minimum/10", its "valley") suggest a rate to train at throughout, and came out
low for that. Measured on the cifar variant (mini subset, SGD one-cycle, 3 epochs; the default test:
100 steps from 1e-5 to 10, seed 0), where the minima lay at 0.087 (BN) and 0.132 (LRN): training at the
minimum itself lost 9-11 points of validation accuracy against a third of it (BN 26.0% at 0.1, LRN
19.7% at 0.1), a tenth of it did as well or worse than a third (BN 35.2% at 0.0087 against 35.2% at
0.0261; LRN 27.8% at 0.0132 against 30.9% at 0.0396), and a thirtieth was worse still (BN 30.7%, LRN
24.0%). The README gives the whole table, with a second seed at the suggestion, 3x and 1/3x.

The test writes nothing and its curve follows from the config's seed alone: the training split,
each batch, its augmentation and dropout and the initial weights are drawn as a run draws them.
The validation and test images are never touched.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator

from .config import TrainConfig
from .data import Cifar10
from .smoothing import DebiasedAverage
from .train import Session, device_label, epoch_order, session_step, start_session, training_batch

__all__ = ["RangeTestSettings", "RangeTest", "range_test", "range_test_config", "rates", "suggest", "report", "RULE",
           "RULE_TEXT"]

RULE = "minimum/3"
RULE_TEXT = "the rate at the smoothed loss's minimum, divided by 3"

StepHandler = Callable[[int, float, float, float], None]   # (step, rate, loss, smoothed loss)


@dataclass(frozen=True)
class RangeTestSettings:
    """The search's budget and range: the same for every config that a comparison sets side by side."""
    start: float = 1e-5        # the first step's rate
    end: float = 10.0          # the last step's rate (the test usually diverges before it)
    steps: int = 100           # training steps from start to end, one batch each
    smoothing: float = 0.9     # weight of the debiased exponential average of the per-batch losses
    divergence: float = 4.0    # stop once the smoothed loss exceeds this many times its minimum

    def problems(self) -> list[str]:
        checks = [(0 < self.start < self.end, f"the range must rise from a positive start, got {self.start} to "
                                              f"{self.end}"),
                  (self.end <= 100, f"the range must end at 100 or below, got {self.end}"),
                  (5 <= self.steps <= 10_000, f"steps must be 5 to 10,000, got {self.steps}"),
                  (0 <= self.smoothing < 1, f"smoothing must be in [0, 1), got {self.smoothing}"),
                  (self.divergence > 1, f"the divergence factor must be above 1, got {self.divergence}")]
        return [message for ok, message in checks if not ok]

    def validate(self) -> "RangeTestSettings":
        problems = self.problems()
        if problems:
            raise ValueError("invalid range test: " + "; ".join(problems))
        return self

    def describe(self) -> str:
        """'100 steps from 1e-05 to 10', as the verdict and the pages say it."""
        return f"{self.steps} steps from {self.start:g} to {self.end:g}"


@dataclass
class RangeTest:
    """A range test's curve, its suggestion and what it cost; `to_dict` is what records keep."""
    settings: RangeTestSettings
    config: dict[str, Any]       # the config as tested (`range_test_config`)
    rates: list[float]
    losses: list[float]          # each step's training loss, as measured
    smoothed: list[float]
    suggestion: float | None     # None: the curve never fell (a range that starts too high, or too few steps)
    ended: str                   # how it ended: 'end of range', 'diverged', 'not finite' or 'stopped' (by request)
    stopped: str                 # the same in words, with the rate and step
    images: int                  # training images seen
    rule: str = RULE
    dataset: str = ""
    device: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.rates)

    @property
    def minimum(self) -> tuple[float, float] | None:
        """(rate, smoothed loss) where the smoothed loss was lowest."""
        finite = [(s, r) for r, s in zip(self.rates, self.smoothed) if math.isfinite(s)]
        if not finite:
            return None
        loss, rate = min(finite)
        return rate, loss

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["losses"] = [v if math.isfinite(v) else None for v in self.losses]  # JSON has no NaN
        out["smoothed"] = [v if math.isfinite(v) else None for v in self.smoothed]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RangeTest":
        values = dict(data)
        values["settings"] = RangeTestSettings(**values["settings"])
        for key in ("losses", "smoothed"):
            values[key] = [math.nan if v is None else float(v) for v in values[key]]
        return cls(**values)

    def summary(self) -> str:
        """One line: the suggestion, the minimum, the budget and where it stopped."""
        low = self.minimum
        at = f"; lowest smoothed loss {low[1]:.3f} at {low[0]:.3g}" if low else ""
        said = f"suggested rate {self.suggestion:.3g} ({self.rule})" if self.suggestion else "no suggestion"
        return f"{said}{at}; {self.steps} steps, {self.images:,} training images; {self.stopped}"


def rates(settings: RangeTestSettings) -> list[float]:
    """Each step's rate: exponential from start to end (a constant ratio from step to step)."""
    ratio = (settings.end / settings.start) ** (1 / (settings.steps - 1))
    return [settings.start * ratio ** i for i in range(settings.steps)]


def range_test_config(config: TrainConfig, settings: RangeTestSettings | None = None) -> TrainConfig:
    """The config as the test runs it: its schedule off, and what does not touch the steps taken set to defaults.

    Two configs that give the same range test give the same value here (the cache key of `lr_search`):
    epochs, the schedule and its knobs, early stopping, logging, threads and compilation change none of
    the test's steps (compiling would cost more time than the test takes, for the same arithmetic). The test
    runs in one process: a data-parallel run's batch is global, so its steps are those of one process.
    """
    defaults = TrainConfig()
    settings = settings or RangeTestSettings()
    return replace(config, lr=settings.start, schedule="constant", epochs=1, milestones=[], gamma=defaults.gamma,
                   plateau_factor=defaults.plateau_factor, plateau_patience=defaults.plateau_patience,
                   min_lr=defaults.min_lr, early_stopping=0, compile=False, threads=0, log_every=defaults.log_every,
                   processes=1)


def suggest(rates_tried: list[float], smoothed: list[float]) -> float | None:
    """The rule: the rate at the smoothed loss's minimum over 3 (None when the loss never fell below its start)."""
    finite = [(s, i) for i, s in enumerate(smoothed) if math.isfinite(s)]
    if len(finite) < 2:
        return None
    lowest, at = min(finite)
    if at == 0 or not lowest < smoothed[0]:
        return None
    return rates_tried[at] / 3


def range_test(config: TrainConfig, settings: RangeTestSettings | None = None, data: Cifar10 | None = None,
               on_step: StepHandler | None = None, stop: threading.Event | None = None) -> RangeTest:
    """Run the test for `config` (its threads and device apply); writes nothing.

    `data`: the dataset already loaded (else the config's is read). `on_step` hears each step; `stop`,
    once set, ends the test after the current step (its curve so far is returned, ended 'stopped').
    """
    settings = (settings or RangeTestSettings()).validate()
    tested = range_test_config(config, settings)
    session = start_session(replace(tested, threads=config.threads), data)
    average = DebiasedAverage(settings.smoothing)
    tried, losses, smoothed, images, lowest, ended = [], [], [], 0, math.inf, "end of range"
    started = time.perf_counter()
    for rate, loss, seen in _steps(session, rates(settings)):
        tried.append(rate)
        losses.append(loss)
        smoothed.append(average.add(loss))
        images += seen
        lowest = min(lowest, smoothed[-1]) if math.isfinite(loss) else lowest
        if on_step:
            on_step(len(tried), rate, loss, smoothed[-1])
        if not math.isfinite(loss):
            ended = "not finite"
        elif smoothed[-1] > settings.divergence * lowest:
            ended = "diverged"
        elif stop is not None and stop.is_set():
            ended = "stopped"
        if ended != "end of range":
            break
    return RangeTest(settings, tested.to_dict(), tried, losses, smoothed, suggest(tried, smoothed), ended,
                     _why(ended, tried, losses, smoothed, lowest, settings), images,
                     dataset=session.data.source.label, device=device_label(session.device),
                     seconds=time.perf_counter() - started)


def _steps(session: Session, rates_to_try: list[float]) -> Iterator[tuple[float, float, int]]:
    """(rate, loss, images) of each step: a real training step, every parameter group at its share of the rate.

    A budget larger than the training split goes on into its next epoch, in that epoch's order, as a run would.
    """
    s, pos = session, session.position
    scales = [group["lr"] / s.config.lr for group in s.optimizer.param_groups]  # features_lr_scale's groups
    order = epoch_order(s)
    s.model.train()
    for rate in rates_to_try:
        if pos.step_in_epoch == s.steps_per_epoch:
            pos.next_epoch()
            order = epoch_order(s)
        for group, scale in zip(s.optimizer.param_groups, scales):
            group["lr"] = rate * scale
        inputs, labels = training_batch(s, order)
        yield rate, float(session_step(s, inputs, labels)[0]), len(labels)


def _why(ended: str, tried: list[float], losses: list[float], smoothed: list[float], lowest: float,
         settings: RangeTestSettings) -> str:
    """How the test ended, in words."""
    at = f"rate {tried[-1]:.3g} (step {len(tried)})" if tried else "the start"
    if ended == "not finite":
        return f"the loss became {losses[-1]} at {at}"
    if ended == "diverged":
        return (f"diverged at {at}: the smoothed loss {smoothed[-1]:.3g} exceeded {settings.divergence:g} times its "
                f"minimum {lowest:.3g}")
    if ended == "stopped":
        return f"stopped by request at step {len(tried)}"
    return f"reached the end of the range ({settings.end:g})"


def report(result: RangeTest, rows: int = 15) -> str:
    """The curve as plain text for the command line: about `rows` of its points, the minimum's row marked."""
    c = result.config
    lines = [f"range test of the {c['variant']} variant, norm {c['norm']}, {c['optimizer']} (momentum "
             f"{c['momentum']:g}, weight decay {c['weight_decay']:g}), batch {c['batch_size']}, seed {c['seed']}, on "
             f"{result.dataset}, "
             f"{result.device}: {result.steps} steps, {result.images:,} training images, {result.seconds:.1f} s",
             "",
             f"  {'step':>5}  {'rate':>9}  {'loss':>9}  {'smoothed':>9}"]
    low = result.minimum
    every = max(result.steps // rows, 1)
    for i, (rate, loss, smoothed) in enumerate(zip(result.rates, result.losses, result.smoothed)):
        lowest = low is not None and rate == low[0]
        if i % every and not lowest and i != result.steps - 1:
            continue
        lines.append(f"  {i + 1:>5}  {rate:>9.3g}  {loss:>9.4g}  {smoothed:>9.4g}" + ("  <- lowest" if lowest else ""))
    said = (f"suggested peak learning rate: {result.suggestion:.3g} ({RULE_TEXT})" if result.suggestion else
            "no suggestion: the smoothed loss never fell below its start (start lower, or give it more steps)")
    return "\n".join(lines + ["", said, f"ended: {result.stopped}"])
