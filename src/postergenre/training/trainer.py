"""The gradient-descent loop: `train_one_epoch`, `evaluate_split`, and `fit` with checkpoints,
resume and early stopping. Every epoch draws its randomness from `seed` and the epoch number
alone, so a resumed run repeats exactly what an uninterrupted one would have done."""

from __future__ import annotations

import copy
import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from postergenre.atomic import atomic_path
from postergenre.console import progress
from postergenre.data.preprocess import Normalisation
from postergenre.data.transforms import Augmentation, to_model_input
from postergenre.evaluation.metrics import balanced_accuracy, mean_average_precision
from postergenre.evaluation.plots import plot_training_curves
from postergenre.models.card import to_probabilities
from postergenre.training import distributed
from postergenre.training.checkpoint import load_checkpoint, save_checkpoint
from postergenre.training.data import SplitData
from postergenre.training.distributed import echo, warn

EVAL_BATCH = 64


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stops and keeps the best epoch so far."""


@dataclass
class LoopConfig:
    """What the loop needs beyond the model and data."""

    task: str
    epochs: int
    batch_size: int
    seed: int
    patience: int
    monitor: str  # a history column, e.g. "val_balanced_accuracy" or "val_loss"
    balance: str  # none | weights | sampler
    normalisation: Normalisation
    augment: Augmentation | None
    progress: bool = True


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The one source of randomness for an epoch (shuffling, sampling, augmentation)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def class_weights(y: np.ndarray, n_classes: int, task: str) -> torch.Tensor:
    """Inverse-frequency weights (single) or negatives/positives ratios (multi), clipped."""
    if task == "single":
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        weights = len(y) / (n_classes * np.maximum(counts, 1))
    else:
        positives = y.sum(axis=0).astype(np.float64)
        weights = np.clip((len(y) - positives) / np.maximum(positives, 1), 1.0, 50.0)
    return torch.tensor(weights, dtype=torch.float32)


def make_loss(train: SplitData, n_classes: int, cfg: LoopConfig) -> nn.Module:
    """Cross-entropy (single) or binary cross-entropy (multi), weighted when asked."""
    weights = class_weights(train.y, n_classes, cfg.task) if cfg.balance == "weights" else None
    if cfg.task == "single":
        return nn.CrossEntropyLoss(weight=weights)
    return nn.BCEWithLogitsLoss(pos_weight=weights)


def epoch_order(train: SplitData, cfg: LoopConfig, generator: torch.Generator) -> np.ndarray:
    """Indices for one epoch: a shuffle, or a class-balanced draw with replacement."""
    n = len(train)
    if cfg.balance == "sampler" and cfg.task == "single":
        counts = np.bincount(train.y)
        per_sample = torch.tensor(1.0 / counts[train.y], dtype=torch.float64)
        return torch.multinomial(per_sample, n, replacement=True, generator=generator).numpy()
    return torch.randperm(n, generator=generator).numpy()


def _score(task: str, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    if task == "single":
        pred = probs.argmax(1)
        accuracy = float((pred == y).mean())
        return {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy(y, pred)}
    return {"map": mean_average_precision(y, probs)}


def _normaliser(loss_fn: nn.Module, y: np.ndarray) -> float:
    """What a mean-reduced `loss_fn` divides the summed loss of targets `y` by."""
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        weight = loss_fn.weight
        return float(len(y)) if weight is None else float(weight[torch.from_numpy(y)].sum())
    return float(y.size)  # BCE: the mean over every poster x genre


def _distributed_step(
    net: nn.Module,
    train: SplitData,
    index: np.ndarray,
    optimizer: torch.optim.Optimizer,
    sum_fn: nn.Module,
    cfg: LoopConfig,
    generator: torch.Generator,
    epoch: int,
) -> tuple[float, torch.Tensor, np.ndarray]:
    """One step of the global batch `index` on this rank's shard. The rank's summed loss is
    divided by the global batch's normaliser and multiplied by the world size, so DDP's
    gradient average is the gradient one process gets on the whole batch. With augmentation,
    every rank augments the whole batch (the same random draws as one process) and keeps its
    rows. Returns the global batch loss, this rank's logits and targets."""
    world, dev = distributed.world_size(), distributed.device()
    rows = distributed.shard(np.arange(len(index)), distributed.rank(), world)
    if cfg.augment is not None:
        pixels, _ = train.batch(index)
        x = to_model_input(pixels, cfg.normalisation, cfg.augment, generator)[rows]
    else:
        pixels, _ = train.batch(index[rows])
        x = to_model_input(pixels, cfg.normalisation)
    y = train.y[index[rows]]
    logits = net(x.to(dev))
    part = sum_fn(logits, torch.from_numpy(y).to(dev)) / _normaliser(sum_fn, train.y[index])
    total = distributed.all_reduce_sum(part.detach())
    if not torch.isfinite(total):
        raise TrainingDiverged(f"loss became {total.item()} in epoch {epoch + 1}")
    optimizer.zero_grad(set_to_none=True)
    (part * world).backward()
    optimizer.step()
    return total.item(), logits.detach().cpu(), y


def train_one_epoch(
    model: nn.Module,
    train: SplitData,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    cfg: LoopConfig,
    epoch: int,
    net: nn.Module | None = None,
) -> dict[str, float]:
    """One pass over the training split; returns mean loss and the epoch's training scores.
    Under torchrun `net` is the DDP-wrapped `model` and each rank trains on its shard of
    every global batch; the scores are over the whole epoch, the same on every rank."""
    generator = epoch_generator(cfg.seed, epoch)
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout and other module randomness
    order = epoch_order(train, cfg, generator)
    model.train()
    total_loss, seen = 0.0, 0
    all_probs, all_y = [], []
    batches = range(0, len(order), cfg.batch_size)
    desc = f"epoch {epoch + 1}/{cfg.epochs}"
    sum_fn = None
    if distributed.active():
        sum_fn = copy.deepcopy(loss_fn).to(distributed.device())
        sum_fn.reduction = "sum"
    with progress(len(batches), desc, unit="batch", enabled=cfg.progress) as bar:
        for start in batches:
            index = np.sort(order[start : start + cfg.batch_size])
            if sum_fn is not None:
                value, logits, y = _distributed_step(
                    net or model, train, index, optimizer, sum_fn, cfg, generator, epoch
                )
                total_loss += value * len(index)
                seen += len(index)
                all_probs.append(to_probabilities(logits, cfg.task).numpy())
                all_y.append(y)
                bar.set_postfix(loss=round(total_loss / seen, 4))
                bar.update()
                continue
            pixels, y = train.batch(index)
            x = to_model_input(pixels, cfg.normalisation, cfg.augment, generator)
            target = torch.from_numpy(y)
            logits = model(x)
            loss = loss_fn(logits, target)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss became {loss.item()} in epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(index)
            seen += len(index)
            all_probs.append(to_probabilities(logits.detach(), cfg.task).numpy())
            all_y.append(y)
            bar.set_postfix(loss=round(total_loss / seen, 4))
            bar.update()
    if sum_fn is not None:  # every rank's shards: the whole epoch, as one process sees it
        parts = distributed.gather((np.concatenate(all_y), np.concatenate(all_probs)))
        all_y, all_probs = [p[0] for p in parts], [p[1] for p in parts]
    scores = _score(cfg.task, np.concatenate(all_y), np.concatenate(all_probs))
    return {"loss": total_loss / max(seen, 1), **scores}


@torch.no_grad()
@torch.no_grad()
def predict_logits(
    model: nn.Module,
    split: SplitData,
    normalisation: Normalisation,
    batch_size: int = EVAL_BATCH,
) -> np.ndarray:
    """Logits for every poster of a split, in order, without augmentation."""
    model.eval()
    dev = next(model.parameters(), torch.empty(0)).device
    out = []
    for start in range(0, len(split), batch_size):
        pixels, _ = split.batch(np.arange(start, min(start + batch_size, len(split))))
        out.append(model(to_model_input(pixels, normalisation).to(dev)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def predict_split(
    model: nn.Module, split: SplitData, normalisation: Normalisation, task: str
) -> np.ndarray:
    """Probabilities for every poster of a split, in order, without augmentation."""
    logits = predict_logits(model, split, normalisation)
    return to_probabilities(logits, task)


def evaluate_split(
    model: nn.Module, split: SplitData, loss_fn: nn.Module, cfg: LoopConfig
) -> dict[str, float]:
    """Validation loss (unweighted) and scores."""
    probs = predict_split(model, split, cfg.normalisation, cfg.task)
    p = torch.from_numpy(probs).clamp(1e-7, 1 - 1e-7)
    if cfg.task == "single":
        loss = nn.functional.nll_loss(p.log(), torch.from_numpy(split.y)).item()
    else:
        loss = nn.functional.binary_cross_entropy(p, torch.from_numpy(split.y)).item()
    return {"loss": loss, **_score(cfg.task, split.y, probs)}


def _improved(value: float, best: float | None, monitor: str) -> bool:
    if best is None:
        return True
    return value < best if monitor.endswith("loss") else value > best


def write_history(history: list[dict[str, Any]], path: Path) -> None:
    """history.csv: one row per epoch (rewritten whole, atomically, after every epoch)."""
    if not history:
        return
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: SplitData,
    val: SplitData,
    n_classes: int,
    cfg: LoopConfig,
    run_dir: Path,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train with validation each epoch, a checkpoint after each epoch, early stopping on
    `cfg.monitor`, and the best epoch's weights restored into `model` at the end.

    Under torchrun every rank trains its shard of each batch through DDP; rank 0 alone
    validates, decides on early stopping, writes checkpoints and history, and sends the loop
    state to the other ranks, so all of them stop together.

    Returns the loop state: history, best epoch and score, and why training stopped.
    """
    net, dev = model, distributed.device()
    if distributed.active():
        distributed.local_batch_size(cfg.batch_size, distributed.world_size())
        model.to(dev)
        net = DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)
    checkpoints = run_dir / "checkpoints"
    last_path, best_path = checkpoints / "last.safetensors", checkpoints / "best.safetensors"
    loss_fn = make_loss(train, n_classes, cfg)
    state: dict[str, Any] = {
        "history": [],
        "best_epoch": None,
        "best_score": None,
        "stale_epochs": 0,
        "stopped": None,
    }
    if resume:
        state = load_checkpoint(last_path, model, optimizer)
        echo(f"resuming after epoch {len(state['history'])} from {last_path}")
    metric = "accuracy" if cfg.task == "single" else "map"
    try:
        for epoch in range(len(state["history"]), cfg.epochs):
            if state["stopped"]:
                break
            epoch_started = time.perf_counter()
            train_scores = train_one_epoch(model, train, optimizer, loss_fn, cfg, epoch, net=net)
            train_seconds = time.perf_counter() - epoch_started
            if not distributed.is_main():
                state = distributed.broadcast(state)
                continue
            val_scores = evaluate_split(model, val, loss_fn, cfg)
            row = {
                "epoch": epoch + 1,
                **{f"train_{k}": v for k, v in train_scores.items()},
                **{f"val_{k}": v for k, v in val_scores.items()},
                "seconds": round(train_seconds, 2),
            }
            state["history"].append(row)
            score = row[cfg.monitor]
            if _improved(score, state["best_score"], cfg.monitor):
                state.update(best_epoch=epoch + 1, best_score=score, stale_epochs=0)
                save_checkpoint(best_path, model, optimizer, state)
            else:
                state["stale_epochs"] += 1
            if state["stale_epochs"] >= cfg.patience:
                state["stopped"] = f"early stop: no {cfg.monitor} gain in {cfg.patience} epochs"
            save_checkpoint(last_path, model, optimizer, state)
            write_history(state["history"], run_dir / "history.csv")
            plot_training_curves(
                state["history"], run_dir / "plots" / "training_curves.png", metric
            )
            echo(
                f"epoch {epoch + 1}/{cfg.epochs}  "
                + "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch")
                + ("  *best" if state["best_epoch"] == epoch + 1 else "")
            )
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
            state = distributed.broadcast(state)
    except TrainingDiverged as exc:
        warn(f"{exc}; keeping the best epoch so far")
        state["stopped"] = f"diverged: {exc}"
        if state["best_epoch"] is None:
            raise
    if state["stopped"] is None:
        state["stopped"] = f"completed {cfg.epochs} epochs"
    if state["best_epoch"] is None:
        raise RuntimeError("no epoch was trained")
    if not distributed.is_main():
        model.to("cpu")
        return state
    best_state = load_checkpoint(best_path, model)
    model.to("cpu")
    echo(
        f"best epoch {best_state['best_epoch']} ({cfg.monitor} {best_state['best_score']:.4f}); "
        f"{state['stopped']}"
    )
    if not math.isfinite(float(best_state["best_score"])):
        warn(f"best {cfg.monitor} is not finite")
    return state
