"""The training loop: short, explicit, every knob in `TrainConfig`, progress reported as events.

`train(config, run_dir)` is importable and does nothing at import time. It writes the run
folder (see runs.py) and calls `on_event` with the same dicts it appends to metrics.jsonl,
so a progress bar, a test and the app all follow one stream.

Its parts, in the shape of torchvision's reference script: `start_session` builds all a run
needs from the config alone and writes nothing (the benchmarks start there too, and so can a
learning-rate range test); `train_one_epoch` steps through an epoch (`training_batch` and
`session_step` are one step of it); `end_epoch` validates and schedules; `finish` measures the
test set. `train` puts the run folder around them: status, checkpoints, stop requests, result.

Reproducibility: the split, each epoch's order and each step's augmentation and dropout are
seeded from (seed, epoch) and (seed, step), so a run resumed at any checkpoint continues
exactly as if it had never stopped, without saving random-number-generator states.

Two clocks in the events: `time` in step, epoch and end events is the training clock (seconds
of training across resumes; evaluation, start-up and waiting in a queue left out), and `wall`
in every start, step, epoch and end event is when it was logged (Unix seconds), which no sum
of the training clock gives once a run stopped and resumed. Records written before `wall`
existed lack it.

With `compile`, a compilation that fails (in the first training step, or in an evaluation) does
not end the run: it goes on in eager mode and says why, on stdout (the run's log) and in a
`compile_failed` event.
"""
from __future__ import annotations

import math
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import allocator, distributed, provenance
from .config import TrainConfig
from .data import (Augment, Cifar10, augment_batch, inference_batch_size, load_cifar10, normalization,
                   resolve_dataset, split_validation, to_model_input)
from .models import build, count_parameters
from .runs import RunWriter, read_metrics
from .weight_files import discard_partial_writes, load_state, save_state, save_weights

EventHandler = Callable[[dict], None]


class TrainingFailed(RuntimeError):
    """The run cannot go on (a NaN loss, data gone); the message is shown to the user as is."""


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU" if device.type == "cpu" else device.type.upper()


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """bf16 autocast where the hardware runs it fast (recent GPUs; CPUs with AVX-512 bf16), else fp32."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and cpu_has_bf16_units():
        return torch.bfloat16
    return torch.float32


def cpu_has_bf16_units() -> bool:
    """Whether the CPU computes in bf16 natively (AVX-512 BF16 or AMX), as Linux lists in /proc/cpuinfo.

    Elsewhere (or unreadable) the answer is no and training stays in fp32: emulated bf16 is slower than fp32.
    """
    return bool(provenance.cpu_flags() & {"avx512_bf16", "amx_bf16"})


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _step_seed(seed: int, *position: int) -> int:
    """A distinct, reproducible seed for each (seed, epoch) or (seed, step)."""
    value = seed
    for p in position:
        value = (value * 1_000_003 + p + 1) % (2**63 - 1)
    return value


FUSED_DEVICES = ("cpu", "cuda")  # where torch 2.4, the floor, has fused SGD, Adam and AdamW


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    # No weight decay on biases and norm parameters, the usual practice since the 2017 "bag of tricks".
    # With features_lr_scale < 1 the conv layers get their own groups at that fraction of the rate (after
    # the others, so param_groups[0] keeps the full rate that the curves show).
    scaled = {id(p) for p in model.features.parameters()} if config.features_lr_scale != 1 else set()
    groups = []
    for in_features, lr in ((False, config.lr), (True, config.lr * config.features_lr_scale)):
        params = [p for p in model.parameters() if p.requires_grad and (id(p) in scaled) == in_features]
        if in_features and not params:
            break
        groups += [{"params": [p for p in params if p.dim() > 1], "weight_decay": config.weight_decay, "lr": lr},
                   {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0, "lr": lr}]
    # The fused kernels update all the parameters in one pass. On one CPU thread, for the paper variant's 57 M
    # parameters, SGD's update took 0.021 s instead of the per-tensor loop's 0.145 s, AdamW's 0.027 s instead of
    # 0.29 s: a third of the paper variant's whole step. Other devices keep torch's default.
    fused = {"fused": True} if next(model.parameters()).device.type in FUSED_DEVICES else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, **fused)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, **fused)
    return torch.optim.AdamW(groups, lr=config.lr, **fused)


def make_schedule(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """Returns the scheduler and when it steps: 'step' (every batch), 'epoch', or 'val' (on validation loss)."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle" and total >= 4:  # its warm-up and decay each need a step or more
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=total,
                                                   pct_start=max(0.25, 2 / total)), "step"
    if config.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, config.milestones, config.gamma), "epoch"
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=config.plateau_factor,
                                                          patience=config.plateau_patience, min_lr=config.min_lr), "val"
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), "epoch"


def precision_label(dtype: torch.dtype) -> str:
    """'bfloat16', 'float32', ...: how records and tables name the autocast precision."""
    return str(dtype).replace("torch.", "")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
             dtype: torch.dtype = torch.float32, batch_size: int | None = None, channels_last: bool = True,
             forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, float, torch.Tensor]:
    """Mean loss, accuracy and the predicted class of every image (uint8 images, any device).

    `forward` computes the logits in the model's place (the compiled model); `model` gives the input
    size, the normalisation and the eval mode. `batch_size` defaults to the device's `inference_batch_size`;
    the batch goes in NHWC unless `channels_last` is False (training passes its config's choice).
    """
    forward = model if forward is None else forward
    batch_size = batch_size or inference_batch_size(device)
    was_training = model.training
    model.eval()
    total_loss, predictions = 0.0, []
    try:
        for i in range(0, len(x), batch_size):
            inputs = to_model_input(x[i:i + batch_size].to(device), model.input_size, *normalization(model),
                                    channels_last=channels_last)
            with autocast(device, dtype):
                logits = forward(inputs).float()
            labels = y[i:i + batch_size].to(device)
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            predictions.append(logits.argmax(1).cpu())
    finally:
        model.train(was_training)
    preds = torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)
    n = max(len(x), 1)
    return total_loss / n, (preds == y.cpu()).float().mean().item() if len(x) else 0.0, preds


def train_step(forward: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               inputs: torch.Tensor, labels: torch.Tensor, device: torch.device, dtype: torch.dtype,
               label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a prepared batch under autocast; returns the detached mean loss and logits.

    The loop calls it through `session_step`, as do the benchmarks, so they time the real step.
    """
    with autocast(device, dtype):
        logits = forward(inputs)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach()


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, classes: int = 10) -> torch.Tensor:
    return torch.bincount(labels * classes + preds, minlength=classes * classes).reshape(classes, classes)


@dataclass
class Position:
    """Where a run is: saved in the checkpoint so resume continues at the same step."""
    epoch: int = 0            # current epoch (0-based)
    step_in_epoch: int = 0    # steps of that epoch already done
    global_step: int = 0
    elapsed: float = 0.0      # training seconds so far, across resumes
    best_val_loss: float = math.inf
    best_val_acc: float = 0.0
    best_epoch: int = 0
    bad_epochs: int = 0       # epochs since the validation loss last improved
    epoch_loss: float = 0.0   # sums over the current epoch's steps so far
    epoch_correct: int = 0
    epoch_seen: int = 0

    def next_epoch(self) -> None:
        """The start of the next epoch, its sums empty."""
        self.epoch += 1
        self.step_in_epoch = self.epoch_seen = self.epoch_correct = 0
        self.epoch_loss = 0.0


@dataclass
class Session:
    """A run ready to step, built by `start_session` from a config alone; the loop's parts move it on."""
    config: TrainConfig
    model: nn.Module              # the weights: what checkpoints save and evaluation switches to eval mode
    forward: nn.Module            # what a training step calls: the model, wrapped for DDP and/or compiled
    eager_forward: nn.Module      # the same without torch.compile, where a failed compilation falls back to
    evaluator: nn.Module          # what evaluation calls: the model, or the compiled model
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    schedule_every: str           # when the scheduler steps: 'step', 'epoch' or 'val' (on the validation loss)
    scaler: torch.amp.GradScaler  # fp16 only; a no-op otherwise
    data: Cifar10                 # the whole dataset: its test split is measured at the end
    train_x: torch.Tensor         # the training split (capped by max_train_images), uint8, on the device
    train_y: torch.Tensor
    val_x: torch.Tensor           # the validation split, where the dataset is: evaluation moves it a batch at a time
    val_y: torch.Tensor
    device: torch.device
    dtype: torch.dtype            # of autocast; float32 is no autocast
    group: distributed.Group
    steps_per_epoch: int
    batch_size: int               # global: each process takes every world-th image of it
    position: Position = field(default_factory=Position)
    compile_unproven: bool = False  # a compiled training step is still to succeed: the first may fall back to eager

    @property
    def augmentation(self) -> Augment:
        c = self.config
        return Augment(c.crop_padding, c.flip, c.rotate_degrees, c.zoom)


def _build_model(config: TrainConfig, device: torch.device, pretrained: bool) -> nn.Module:
    torch.manual_seed(config.seed)
    model = build(config.variant, config.norm, dropout=config.dropout, init=config.init)
    if config.variant == "imagenet" and pretrained:
        from . import imagenet  # here, not at the top: see imagenet.py's note on torchvision

        imagenet.load_pretrained_body(model, config.pretrained_path)  # all but the new last layer
    if config.freeze_features:
        model.features.requires_grad_(False)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


def start_session(config: TrainConfig, data: Cifar10 | None = None, state: dict | None = None,
                  group: distributed.Group | None = None, pretrained: bool = True) -> Session:
    """Everything a run needs before its next step, from the config alone; writes nothing.

    `data`: the dataset already loaded (else the config's is read). `state`: a checkpoint's contents
    (`load_state`) to continue from. `pretrained=False` keeps the imagenet variant's random weights
    (a benchmark's speed does not depend on them). The seed fixes the split, the weights, every draw.
    """
    config.validate()
    group = group or distributed.current()
    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    if device.type == "cpu":
        allocator.keep_freed_memory()  # large blocks stay in the heap: no page faults on each step's gradients
    if group.active and device.type == "cuda":
        device = torch.device("cuda", group.local_rank)
    dtype = pick_dtype(config.precision, device)
    data = data or load_cifar10(resolve_dataset(config.data_dir))
    train_x, train_y, val_x, val_y = split_validation(data.train_x, data.train_y, config.val_fraction, config.seed)
    if config.max_train_images:
        train_x, train_y = train_x[:config.max_train_images], train_y[:config.max_train_images]
    steps_per_epoch = max(len(train_x) // config.batch_size, 1)
    model = _build_model(config, device, pretrained and state is None)
    optimizer = make_optimizer(config, model)
    scheduler, schedule_every = make_schedule(config, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    eager = nn.parallel.DistributedDataParallel(model) if group.active else model
    forward, evaluator = eager, model
    if config.compile:
        forward = torch.compile(eager)
        evaluator = torch.compile(model) if group.active else forward
    session = Session(config, model, forward, eager, evaluator, optimizer, scheduler, schedule_every, scaler, data,
                      train_x.to(device), train_y.to(device), val_x, val_y, device, dtype, group, steps_per_epoch,
                      min(config.batch_size, len(train_x)), compile_unproven=config.compile)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        session.position = Position(**state["position"])
    return session


def epoch_order(session: Session) -> torch.Tensor:
    """The shuffle of the training split for the session's epoch, on the device: it follows (seed, epoch) alone."""
    seed = _step_seed(session.config.seed, session.position.epoch)
    return torch.randperm(len(session.train_x), generator=torch.Generator().manual_seed(seed)).to(session.device)


def _batch_seed(session: Session) -> int:
    """The seed of the step at the session's position: its augmentation and dropout (each process its own)."""
    s = session
    return _step_seed(s.config.seed, 1 << 20, s.position.global_step, *([s.group.rank] if s.group.active else []))


def training_batch(session: Session, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented inputs and labels of the step at the session's position (this process's share under DDP).

    Seeds the step's dropout as well, so that the step which follows draws what it draws in an uninterrupted run.
    """
    s, pos = session, session.position
    idx = order[pos.step_in_epoch * s.batch_size:(pos.step_in_epoch + 1) * s.batch_size][s.group.rank::s.group.world]
    seed = _batch_seed(s)
    torch.manual_seed(seed)  # dropout; CUDA too
    gen = torch.Generator(device=s.device).manual_seed(seed)
    inputs = augment_batch(s.train_x[idx], s.augmentation, s.model.input_size, gen, *normalization(s.model))
    if s.config.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, s.train_y[idx]


def session_step(session: Session, inputs: torch.Tensor, labels: torch.Tensor,
                 emit: EventHandler | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`train_step` on a batch of `training_batch`, the per-step schedule, and the position one step on.

    The first compiled step may fail to compile: then it is taken again eagerly from the same state
    (the optimizer has not stepped; gradients, BN statistics and the dropout seed are put back) and the
    session goes on without torch.compile, saying why (see `_compile_failed`).
    """
    s = session

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        return train_step(s.forward, s.optimizer, s.scaler, inputs, labels, s.device, s.dtype,
                          s.config.label_smoothing)

    loss, logits = _first_compiled_step(s, step, emit) if s.compile_unproven else step()
    if s.schedule_every == "step":
        s.scheduler.step()
    s.position.step_in_epoch += 1
    s.position.global_step += 1
    return loss, logits


def _first_compiled_step(session: Session, step: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                         emit: EventHandler | None) -> tuple[torch.Tensor, torch.Tensor]:
    saved = [b.detach().clone() for b in session.model.buffers()]  # BN statistics a failed attempt may have moved
    try:
        result = step()
    except Exception as err:  # whatever compiling raised: dynamo's errors have no public type to catch
        with torch.no_grad():
            for buffer, value in zip(session.model.buffers(), saved):
                buffer.copy_(value)
        session.model.zero_grad(set_to_none=True)
        torch.manual_seed(_batch_seed(session))  # the eager attempt's dropout draws what the failed one drew
        _compile_failed(session, "training step", err, emit)
        result = step()
    session.compile_unproven = False
    return result


def _error_summary(err: BaseException, limit: int = 500) -> str:
    """'Type: message' up to the message's first blank line (dynamo appends advice on logging), shortened."""
    text = " ".join(str(err).strip().split("\n\n")[0].split())
    summary = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return summary if len(summary) <= limit else summary[:limit - 1] + "…"


def _compile_failed(session: Session, during: str, err: BaseException, emit: EventHandler | None) -> None:
    """Go on eagerly after a failed compilation, and say so on stdout (the run's log) and as an event.

    A failed training step leaves nothing compiled (an evaluation would only try again what failed);
    a failed evaluation leaves the training step compiled, which has worked by then.
    """
    if during == "training step":
        session.forward, session.compile_unproven = session.eager_forward, False
    session.evaluator = session.model
    pos, reason = session.position, _error_summary(err)
    print(f"torch.compile failed in the {during} at step {pos.global_step}; going on in eager mode. {reason}",
          flush=True)
    if emit:
        emit({"event": "compile_failed", "during": during, "global_step": pos.global_step, "epoch": pos.epoch,
              "reason": reason})


def evaluate_split(session: Session, x: torch.Tensor, y: torch.Tensor, emit: EventHandler | None = None
                   ) -> tuple[float, float, torch.Tensor]:
    """`evaluate` with the session's model and settings.

    A compiled evaluation compiles anew (no_grad, eval mode, other batch sizes) and may fail where training
    did not: it is then done again eagerly, as evaluation changes no state, and stays eager.
    """
    s = session

    def run(forward: nn.Module) -> tuple[float, float, torch.Tensor]:
        return evaluate(s.model, x, y, s.device, s.dtype, channels_last=s.config.channels_last, forward=forward)

    if s.evaluator is s.model:
        return run(s.model)
    try:
        return run(s.evaluator)
    except Exception as err:  # as in _first_compiled_step
        _compile_failed(s, "evaluation", err, emit)
        return run(s.model)


def _ignore(event: dict) -> None:
    pass


class _Window:
    """Sums over the steps since the last step event, kept on the device so that no step waits for them, and the
    learning rate the last of them trained with (a per-step schedule has moved on once the step is done)."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen, self.start, self.lr = 0, time.perf_counter(), math.nan

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, lr: float) -> None:
        self.loss += loss * len(labels)
        self.correct += (logits.argmax(1) == labels).sum()
        self.seen += len(labels)
        self.lr = lr


def _log_window(session: Session, window: _Window, emit: EventHandler, clock_zero: float) -> None:
    """The step event of the window, summed over all processes; a loss that is no longer finite ends the run."""
    s, pos = session, session.position
    totals = s.group.sum_(torch.stack([window.loss.float(), window.correct.float(),
                                       torch.tensor(float(window.seen), device=s.device)]))
    loss_sum, correct, seen = totals.tolist()
    seen = int(seen)
    mean_loss = loss_sum / seen
    if not math.isfinite(mean_loss):
        raise TrainingFailed(f"the loss became {mean_loss} at step {pos.global_step} (epoch "
                             f"{pos.epoch + 1}): lower the learning rate or use a norm layer")
    seconds = time.perf_counter() - window.start
    pos.epoch_loss += mean_loss * seen
    pos.epoch_correct += int(correct)
    pos.epoch_seen += seen
    emit({"event": "step", "epoch": pos.epoch + (pos.step_in_epoch / s.steps_per_epoch),
          "global_step": pos.global_step, "loss": mean_loss, "acc": correct / seen,
          "lr": window.lr, "images_per_s": seen / max(seconds, 1e-9),
          "time": time.perf_counter() - clock_zero, "wall": time.time()})


def train_one_epoch(session: Session, stop: threading.Event | None = None,
                    emit: EventHandler | None = None) -> float:
    """Step to the end of the session's epoch, or to a stop request; returns the training seconds it took.

    A stop leaves the position inside the epoch (step_in_epoch < steps_per_epoch). Step events go out
    every `log_every` steps, at the epoch's end and at a stop, over all processes.
    """
    s, pos, emit = session, session.position, emit or _ignore
    epoch_start = time.perf_counter()
    clock_zero = epoch_start - pos.elapsed  # perf_counter's reading when the run's training clock read 0
    order = epoch_order(s)
    s.model.train()
    window = _Window(s.device)
    while pos.step_in_epoch < s.steps_per_epoch:
        inputs, labels = training_batch(s, order)
        lr = s.optimizer.param_groups[0]["lr"]  # the rate this step trains with
        loss, logits = session_step(s, inputs, labels, emit)
        window.add(loss, logits, labels, lr)
        last_of_epoch = pos.step_in_epoch == s.steps_per_epoch
        stop_now = s.group.any(stop is not None and stop.is_set(), s.device)
        if pos.global_step % s.config.log_every == 0 or last_of_epoch or stop_now:
            _log_window(s, window, emit, clock_zero)
            window = _Window(s.device)
        if stop_now and not last_of_epoch:
            break
    pos.elapsed = time.perf_counter() - clock_zero
    return time.perf_counter() - epoch_start


def end_epoch(session: Session, train_seconds: float, emit: EventHandler | None = None) -> None:
    """After an epoch's last step: validation, the schedule, the best so far, the epoch event; on to the next."""
    s, pos, emit = session, session.position, emit or _ignore
    val_loss, val_acc, _ = evaluate_split(s, s.val_x, s.val_y, emit) if len(s.val_x) else (math.nan, math.nan, None)
    lr = s.optimizer.param_groups[0]["lr"]
    if s.schedule_every == "epoch":
        s.scheduler.step()
    elif s.schedule_every == "val":
        s.scheduler.step(val_loss)
    if len(s.val_x) and val_loss < pos.best_val_loss:
        pos.best_val_loss, pos.bad_epochs = val_loss, 0
    else:
        pos.bad_epochs += 1
    if len(s.val_x) and val_acc > pos.best_val_acc:
        pos.best_val_acc, pos.best_epoch = val_acc, pos.epoch + 1
    emit({"event": "epoch", "epoch": pos.epoch + 1, "global_step": pos.global_step,
          "train_loss": pos.epoch_loss / max(pos.epoch_seen, 1),
          "train_acc": pos.epoch_correct / max(pos.epoch_seen, 1),
          "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
          "epoch_seconds": train_seconds, "images_per_s": pos.epoch_seen / max(train_seconds, 1e-9),
          "time": pos.elapsed, "wall": time.time()})
    pos.next_epoch()


def finish(session: Session, emit: EventHandler | None = None, epoch_events: Sequence[dict] = ()) -> dict:
    """The test set, measured once at the end: the run's result and its 'end' event.

    `epoch_events`: the run's epoch events, resumed parts included, for its mean speed (None without them).
    """
    s, pos, emit = session, session.position, emit or _ignore
    test_start = time.perf_counter()
    test_loss, test_acc, preds = evaluate_split(s, s.data.test_x, s.data.test_y, emit)
    confusion = confusion_matrix(s.data.test_y, preds, len(s.data.classes))
    per_class = (confusion.diag().float() / confusion.sum(1).clamp_min(1)).tolist()
    result = {
        "test_accuracy": test_acc, "test_loss": test_loss, "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(), "classes": list(s.data.classes), "predictions": preds.tolist(),
        "test_images": len(s.data.test_x), "dataset": s.data.source.label, "dataset_kind": s.data.source.kind,
        "device": device_label(s.device), "precision": precision_label(s.dtype),
        "parameters": count_parameters(s.model), "epochs_run": pos.epoch, "global_step": pos.global_step,
        "train_seconds": pos.elapsed, "seconds_per_epoch": pos.elapsed / max(pos.epoch, 1),
        "images_per_s": (sum(e["images_per_s"] for e in epoch_events) / len(epoch_events)) if epoch_events else None,
        "best_val_acc": pos.best_val_acc, "best_epoch": pos.best_epoch,
        "eval_seconds": time.perf_counter() - test_start,
    }
    emit({"event": "end", "global_step": pos.global_step, "epoch": pos.epoch, "test_acc": test_acc,
          "test_loss": test_loss, "time": pos.elapsed, "wall": time.time()})
    return result


def save_checkpoint(session: Session, writer: RunWriter | None) -> None:
    """State for resume and the weights, into the run folder (none: nothing to do); a failed write ends the run."""
    if not writer:
        return
    s = session
    try:
        save_state(writer.path / "state.pt", {
            "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict(), "scaler": s.scaler.state_dict(),
            "position": vars(s.position).copy(), "config": s.config.to_dict()})
        save_weights(writer.path / "weights.safetensors", s.model, s.config.to_dict())
    except OSError as err:
        kept = "the previous checkpoint is kept, and resume continues from it" \
            if (writer.path / "state.pt").exists() else "no checkpoint was written yet"
        raise TrainingFailed(f"cannot write the checkpoint in {writer.path} ({err.strerror or err}): {kept}. "
                             "Free disk space or fix the folder's permissions, then resume.") from err


def train(config: TrainConfig, run_dir: str | Path | None = None, on_event: EventHandler | None = None,
          stop: threading.Event | None = None, resume: bool = False, data: Cifar10 | None = None) -> dict:
    """Train one run; returns the test result. Writes the run folder when `run_dir` is given.

    `stop` (set by a signal handler or a caller) ends the run after the current step with a
    checkpoint and the state 'stopped'. With `resume`, continues from the folder's checkpoint.
    """
    config.validate()
    group = distributed.current()
    writer = RunWriter(Path(run_dir)) if run_dir and group.main else None
    state_path = Path(run_dir) / "state.pt" if run_dir and resume else None
    stop = stop or threading.Event()
    try:
        if writer:  # where the run came from, each time a process starts it (provenance.py)
            data = data or load_cifar10(resolve_dataset(config.data_dir))
            device = pick_device(config.device)
            provenance.record(writer.path, provenance.describe(device, device_label(device), data, group.world),
                              resumed=state_path is not None and state_path.exists())
        return _train(config, writer, on_event if group.main else None, stop, state_path, data, group)
    except BaseException as err:
        if writer:
            reason = str(err) if isinstance(err, (TrainingFailed, ValueError, FileNotFoundError)) else \
                f"{type(err).__name__}: {err}"
            if isinstance(err, KeyboardInterrupt):
                reason = "interrupted before a checkpoint could be written"
            elif isinstance(err, torch.OutOfMemoryError):
                reason = (f"the device ran out of memory ({str(err).splitlines()[0] if str(err) else 'no detail'}): "
                          f"lower the batch size (now {config.batch_size}), use the cifar variant or bf16 precision")
            try:
                writer.set_status("failed", reason=reason, checkpoint=(writer.path / "state.pt").exists())
            except OSError:
                pass  # a full disk: the status cannot say so, and the reader shows the dead process as stopped
        raise
    finally:
        if writer:
            writer.close()


def _start_event(session: Session) -> dict:
    s, pos, now = session, session.position, time.time()
    return {"event": "start", "global_step": pos.global_step, "epoch": pos.epoch, "resumed": pos.global_step > 0,
            "device": device_label(s.device), "precision": precision_label(s.dtype),
            "dataset": s.data.source.label, "train_images": len(s.train_x), "val_images": len(s.val_x),
            "test_images": len(s.data.test_x), "steps_per_epoch": s.steps_per_epoch, "epochs": s.config.epochs,
            "parameters": count_parameters(s.model), "processes": s.group.world, "time": now,
            "wall": now}


def _train(config: TrainConfig, writer: RunWriter | None, on_event: EventHandler | None, stop: threading.Event,
           state_path: Path | None, data: Cifar10 | None, group: distributed.Group) -> dict:
    """The run folder around the loop's parts: status, checkpoints after each epoch, stop requests, the result."""
    handlers = [h for h in (writer.log if writer else None, on_event) if h]

    def emit(event: dict) -> None:
        for handler in handlers:
            handler(event)

    s = start_session(config, data, load_state(state_path) if state_path and state_path.exists() else None, group)
    pos = s.position

    def set_status(state: str, **extra) -> None:
        if writer:
            writer.set_status(state, epoch=pos.epoch, **extra)

    if writer and state_path is not None:
        # What a killed process logged after its checkpoint (all of it, when it died before the first one,
        # and a line it was cut off in) is redone now: the record keeps one copy of each step.
        writer.truncate_metrics_after(pos.global_step)
    if writer:
        discard_partial_writes(writer.path)
    running = dict(device=device_label(s.device), dataset=s.data.source.label)
    set_status("running", checkpoint=bool(writer) and (writer.path / "state.pt").exists(), **running)
    emit(_start_event(s))
    while pos.epoch < config.epochs:
        seconds = train_one_epoch(s, stop, emit)
        if pos.step_in_epoch < s.steps_per_epoch:  # stopped within the epoch
            return _stop(s, writer, emit)
        end_epoch(s, seconds, emit)
        if config.early_stopping and pos.bad_epochs >= config.early_stopping:
            emit({"event": "early_stop", "epoch": pos.epoch, "global_step": pos.global_step,
                  "reason": f"validation loss did not improve for {pos.bad_epochs} epochs"})
            save_checkpoint(s, writer)
            break
        save_checkpoint(s, writer)
        set_status("running", checkpoint=True, **running)
        if s.group.any(stop.is_set(), s.device) and pos.epoch < config.epochs:
            return _stop(s, writer, emit)
    epochs = [e for e in read_metrics(writer.path / "metrics.jsonl") if e.get("event") == "epoch"] if writer else []
    result = finish(s, emit, epochs)
    if writer:
        writer.write_result(result)
    set_status("finished", global_step=pos.global_step, checkpoint=True)
    return result


def _stop(session: Session, writer: RunWriter | None, emit: EventHandler) -> dict:
    """A stop request honoured: a checkpoint, the state 'stopped', the event; no result."""
    pos = session.position
    save_checkpoint(session, writer)
    if writer:
        writer.set_status("stopped", epoch=pos.epoch, global_step=pos.global_step, checkpoint=True,
                          reason="stopped by request; resume continues from here")
    emit({"event": "stopped", "global_step": pos.global_step, "epoch": pos.epoch})
    return {}
