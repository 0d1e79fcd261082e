"""The training loop: short, explicit, every knob in `TrainConfig`, progress reported as events.

`train(config, run_dir)` is importable and does nothing at import time. It writes the run
folder (see runs.py) and calls `on_event` with the same dicts it appends to metrics.jsonl,
so a progress bar, a test and the app all follow one stream.

Reproducibility: the split, each epoch's order and each step's augmentation and dropout are
seeded from (seed, epoch) and (seed, step), so a run resumed at any checkpoint continues
exactly as if it had never stopped, without saving random-number-generator states.
"""
from __future__ import annotations

import math
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import discard_partial_writes, load_state, save_state, save_weights
from . import distributed, imagenet, provenance
from .config import TrainConfig
from .data import (Augment, Cifar10, augment_batch, load_cifar10, normalization, resolve_dataset, split_validation,
                   to_model_input)
from .models import build, count_parameters
from .runs import RunWriter, read_json, read_metrics

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
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return torch.float32


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
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)


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


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
             dtype: torch.dtype = torch.float32, batch_size: int = 500, channels_last: bool = False
             ) -> tuple[float, float, torch.Tensor]:
    """Mean loss, accuracy and the predicted class of every image (uint8 images, any device)."""
    was_training = model.training
    model.eval()
    total_loss, predictions = 0.0, []
    try:
        for i in range(0, len(x), batch_size):
            inputs = to_model_input(x[i:i + batch_size].to(device), model.input_size, *normalization(model))
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast(device, dtype):
                logits = model(inputs).float()
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

    The training loop and bench/throughput.py both call this, so the benchmark times the real step.
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


def _train(config: TrainConfig, writer: RunWriter | None, on_event: EventHandler | None, stop: threading.Event,
           state_path: Path | None, data: Cifar10 | None, group: distributed.Group) -> dict:
    emit_handlers = [h for h in (writer.log if writer else None, on_event) if h]

    def emit(event: dict) -> None:
        for handler in emit_handlers:
            handler(event)

    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    if group.active and device.type == "cuda":
        device = torch.device("cuda", group.local_rank)
    dtype = pick_dtype(config.precision, device)
    data = data or load_cifar10(resolve_dataset(config.data_dir))
    train_x, train_y, val_x, val_y = split_validation(data.train_x, data.train_y, config.val_fraction, config.seed)
    if config.max_train_images:
        train_x, train_y = train_x[:config.max_train_images], train_y[:config.max_train_images]
    train_x, train_y = train_x.to(device), train_y.to(device)
    steps_per_epoch = max(len(train_x) // config.batch_size, 1)
    batch_size = min(config.batch_size, len(train_x))  # global: each process takes every world-th image of it

    torch.manual_seed(config.seed)
    model = build(config.variant, config.norm, dropout=config.dropout, init=config.init)
    if config.variant == "imagenet" and not (state_path is not None and state_path.exists()):
        imagenet.load_pretrained_body(model, config.pretrained_path)  # all but the new last layer
    if config.freeze_features:
        model.features.requires_grad_(False)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model)
    scheduler, schedule_every = make_schedule(config, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    forward = nn.parallel.DistributedDataParallel(model) if group.active else model
    forward = torch.compile(forward) if config.compile else forward
    augmentation = Augment(config.crop_padding, config.flip, config.rotate_degrees, config.zoom)
    pos = Position()

    if state_path is not None and state_path.exists():
        state = load_state(state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        pos = Position(**state["position"])
    if writer and state_path is not None:
        # What a killed process logged after its checkpoint (all of it, when it died before the first one,
        # and a line it was cut off in) is redone now: the record keeps one copy of each step.
        writer.truncate_metrics_after(pos.global_step)
    if writer:
        discard_partial_writes(writer.path)

    def checkpoint() -> None:
        if not writer:
            return
        try:
            save_state(writer.path / "state.pt", {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "position": vars(pos).copy(),
                "config": config.to_dict()})
            save_weights(writer.path / "weights.safetensors", model, config.to_dict())
        except OSError as err:
            kept = "the previous checkpoint is kept, and resume continues from it" \
                if (writer.path / "state.pt").exists() else "no checkpoint was written yet"
            raise TrainingFailed(f"cannot write the checkpoint in {writer.path} ({err.strerror or err}): {kept}. "
                                 "Free disk space or fix the folder's permissions, then resume.") from err

    if writer:
        writer.set_status("running", epoch=pos.epoch, checkpoint=(writer.path / "state.pt").exists(),
                          device=device_label(device), dataset=data.source.label)
    emit({"event": "start", "global_step": pos.global_step, "epoch": pos.epoch, "resumed": pos.global_step > 0,
          "device": device_label(device), "precision": str(dtype).replace("torch.", ""),
          "dataset": data.source.label, "train_images": len(train_x), "val_images": len(val_x),
          "test_images": len(data.test_x), "steps_per_epoch": steps_per_epoch, "epochs": config.epochs,
          "parameters": count_parameters(model), "processes": group.world, "time": time.time()})

    model.train()
    window_loss = torch.zeros((), device=device)
    window_correct = torch.zeros((), device=device, dtype=torch.long)
    window_seen, window_start = 0, time.perf_counter()
    stopped = False
    while pos.epoch < config.epochs and not stopped:
        epoch_start = time.perf_counter()
        elapsed_at_epoch_start = pos.elapsed
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(_step_seed(config.seed, pos.epoch)))
        order = order.to(device)
        while pos.step_in_epoch < steps_per_epoch:
            idx = order[pos.step_in_epoch * batch_size:(pos.step_in_epoch + 1) * batch_size][group.rank::group.world]
            step_seed = _step_seed(config.seed, 1 << 20, pos.global_step, *([group.rank] if group.active else []))
            torch.manual_seed(step_seed)  # dropout; CUDA too
            gen = torch.Generator(device=device).manual_seed(step_seed)
            inputs = augment_batch(train_x[idx], augmentation, model.input_size, gen, *normalization(model))
            if config.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            labels = train_y[idx]
            loss, logits = train_step(forward, optimizer, scaler, inputs, labels, device, dtype,
                                      config.label_smoothing)
            if schedule_every == "step":
                scheduler.step()
            window_loss += loss * len(idx)
            window_correct += (logits.argmax(1) == labels).sum()
            window_seen += len(idx)
            pos.step_in_epoch += 1
            pos.global_step += 1

            last_of_epoch = pos.step_in_epoch == steps_per_epoch
            stop_now = group.any(stop.is_set(), device)
            if pos.global_step % config.log_every == 0 or last_of_epoch or stop_now:
                totals = group.sum_(torch.stack([window_loss.float(), window_correct.float(),
                                                 torch.tensor(float(window_seen), device=device)]))
                window_loss_sum, window_correct_sum, window_seen = totals.tolist()
                window_seen = int(window_seen)
                mean_loss = window_loss_sum / window_seen
                if not math.isfinite(mean_loss):
                    raise TrainingFailed(f"the loss became {mean_loss} at step {pos.global_step} (epoch "
                                         f"{pos.epoch + 1}): lower the learning rate or use a norm layer")
                seconds = time.perf_counter() - window_start
                pos.epoch_loss += mean_loss * window_seen
                pos.epoch_correct += int(window_correct_sum)
                pos.epoch_seen += window_seen
                emit({"event": "step", "epoch": pos.epoch + (pos.step_in_epoch / steps_per_epoch),
                      "global_step": pos.global_step, "loss": mean_loss,
                      "acc": window_correct_sum / window_seen, "lr": optimizer.param_groups[0]["lr"],
                      "images_per_s": window_seen / max(seconds, 1e-9),
                      "time": elapsed_at_epoch_start + time.perf_counter() - epoch_start})
                window_loss.zero_()
                window_correct.zero_()
                window_seen, window_start = 0, time.perf_counter()
            if stop_now and not last_of_epoch:
                stopped = True
                break
        pos.elapsed = elapsed_at_epoch_start + time.perf_counter() - epoch_start
        if stopped:
            break

        train_seconds = time.perf_counter() - epoch_start
        val_loss, val_acc, _ = evaluate(model, val_x, val_y, device, dtype, channels_last=config.channels_last) \
            if len(val_x) else (math.nan, math.nan, None)
        lr = optimizer.param_groups[0]["lr"]
        if schedule_every == "epoch":
            scheduler.step()
        elif schedule_every == "val":
            scheduler.step(val_loss)
        improved = len(val_x) and val_loss < pos.best_val_loss
        if improved:
            pos.best_val_loss, pos.bad_epochs = val_loss, 0
        else:
            pos.bad_epochs += 1
        if len(val_x) and val_acc > pos.best_val_acc:
            pos.best_val_acc, pos.best_epoch = val_acc, pos.epoch + 1
        emit({"event": "epoch", "epoch": pos.epoch + 1, "global_step": pos.global_step,
              "train_loss": pos.epoch_loss / max(pos.epoch_seen, 1),
              "train_acc": pos.epoch_correct / max(pos.epoch_seen, 1),
              "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
              "epoch_seconds": train_seconds, "images_per_s": pos.epoch_seen / max(train_seconds, 1e-9),
              "time": pos.elapsed})
        pos.epoch += 1
        pos.step_in_epoch = pos.epoch_seen = pos.epoch_correct = 0
        pos.epoch_loss = 0.0
        if config.early_stopping and pos.bad_epochs >= config.early_stopping:
            emit({"event": "early_stop", "epoch": pos.epoch, "global_step": pos.global_step,
                  "reason": f"validation loss did not improve for {pos.bad_epochs} epochs"})
            checkpoint()
            break
        checkpoint()
        if writer:
            writer.set_status("running", epoch=pos.epoch, checkpoint=True, device=device_label(device),
                              dataset=data.source.label)
        if group.any(stop.is_set(), device):
            stopped = pos.epoch < config.epochs

    if stopped:
        checkpoint()
        if writer:
            writer.set_status("stopped", epoch=pos.epoch, global_step=pos.global_step, checkpoint=True,
                              reason="stopped by request; resume continues from here")
        emit({"event": "stopped", "global_step": pos.global_step, "epoch": pos.epoch})
        return {}

    test_start = time.perf_counter()
    test_loss, test_acc, preds = evaluate(model, data.test_x, data.test_y, device, dtype,
                                          channels_last=config.channels_last)
    confusion = confusion_matrix(data.test_y, preds, len(data.classes))
    per_class = (confusion.diag().float() / confusion.sum(1).clamp_min(1)).tolist()
    epochs = [e for e in read_metrics(writer.path / "metrics.jsonl") if e.get("event") == "epoch"] if writer else []
    result = {
        "test_accuracy": test_acc, "test_loss": test_loss, "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(), "classes": list(data.classes), "predictions": preds.tolist(),
        "test_images": len(data.test_x), "dataset": data.source.label, "dataset_kind": data.source.kind,
        "device": device_label(device), "precision": str(dtype).replace("torch.", ""),
        "parameters": count_parameters(model), "epochs_run": pos.epoch, "global_step": pos.global_step,
        "train_seconds": pos.elapsed, "seconds_per_epoch": pos.elapsed / max(pos.epoch, 1),
        "images_per_s": (sum(e["images_per_s"] for e in epochs) / len(epochs)) if epochs else None,
        "best_val_acc": pos.best_val_acc, "best_epoch": pos.best_epoch,
        "eval_seconds": time.perf_counter() - test_start,
    }
    emit({"event": "end", "global_step": pos.global_step, "epoch": pos.epoch, "test_acc": test_acc,
          "test_loss": test_loss, "time": pos.elapsed})
    if writer:
        writer.write_result(result)
        writer.set_status("finished", epoch=pos.epoch, global_step=pos.global_step, checkpoint=True)
    return result


def read_config(run_dir: str | Path) -> TrainConfig:
    return TrainConfig.from_dict(read_json(Path(run_dir) / "config.json", {}))
