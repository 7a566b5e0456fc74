"""`postergenre train`: data -> model -> fit -> run folder with plots and the final bundle.

Three ways to fit, chosen by architecture and `--mode`:
- gradient training (seed-cnn from scratch; `--mode finetune` for EfficientNet-Lite), with the
  checkpoint / resume / early-stopping loop of `trainer.fit`;
- `--mode linear-probe` (the Lite default): logistic regression on cached frozen embeddings;
- `--arch knn*`: a k-nearest-neighbour vote over cached frozen embeddings.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from postergenre.console import echo, warn
from postergenre.data.cache import CachedArrays, PosterCache
from postergenre.data.labels import load_posters
from postergenre.data.records import PosterRecord
from postergenre.data.targets import (
    class_counts,
    describe_counts,
    infer_task,
    resolve_genres,
)
from postergenre.data.transforms import Augmentation
from postergenre.errors import UserError
from postergenre.evaluation.metrics import multi_label_metrics, single_label_metrics
from postergenre.evaluation.plots import plot_confusion_matrix, plot_pr_curves
from postergenre.evaluation.thresholds import tune_thresholds
from postergenre.models import ArchSpec, create_model, get_arch
from postergenre.models.bundle import save_bundle, write_json_atomic
from postergenre.models.embeddings import compute_embeddings
from postergenre.training.data import assign_splits, prepare_split
from postergenre.training.probe import fit_knn, fit_linear_probe
from postergenre.training.trainer import LoopConfig, fit, predict_split

SPLITS = ("train", "val")


@dataclass
class TrainConfig:
    """Everything `postergenre train` was asked to do; saved as the run's config.json."""

    out: Path
    arch: str = "seed-cnn"
    labels: Path | None = None
    images: Path | None = None
    splits: Path | None = None
    folder: Path | None = None
    genres: list[str] | None = None
    min_count: int | None = None
    task: str | None = None
    mode: str | None = None
    epochs: int = 30
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    patience: int = 5
    monitor: str | None = None
    balance: str = "weights"
    augment: bool = True
    cache_dir: Path | None = None
    resume: bool = False
    progress: bool = True

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def make_optimizer(name: str, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """RMSprop with Keras's defaults (the article), or AdamW. A pretrained backbone learns 3x
    slower than the freshly initialised classifier."""
    if name == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=lr, alpha=0.9, eps=1e-7)
    if name == "adamw":
        head = [p for n, p in model.named_parameters() if n.startswith("classifier.")]
        body = [p for n, p in model.named_parameters() if not n.startswith("classifier.")]
        groups = [{"params": body, "lr": lr / 3}, {"params": head, "lr": lr}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=1e-4)
    raise ValueError(f"unknown optimizer {name!r}")


def resolve_mode(spec: ArchSpec, mode: str | None) -> str:
    """`scratch` (seed-cnn), `linear-probe` / `finetune` (Lite), or `knn`."""
    if spec.name.startswith("knn"):
        if mode not in (None, "linear-probe"):
            raise UserError(f"--mode {mode} does not apply to {spec.name}")
        return "knn"
    if not spec.pretrained:
        if mode not in (None, "finetune"):
            raise UserError(f"{spec.name} has no pretrained backbone; --mode {mode} needs one")
        return "scratch"
    return mode or "linear-probe"


def _check_run_dir(cfg: TrainConfig, gradient: bool) -> None:
    last = cfg.out / "checkpoints" / "last.safetensors"
    config = cfg.out / "config.json"
    resumable = last.exists() if gradient else config.exists()
    if cfg.resume and not resumable:
        raise UserError(f"nothing to resume in {cfg.out}")
    if not cfg.resume and (last.exists() or config.exists()):
        raise UserError(f"{cfg.out} already holds a run; pass --resume or choose another --out")
    if cfg.resume:
        saved = json.loads(config.read_text())
        for key in ("arch", "task", "genres", "seed", "mode"):
            if key in saved and saved[key] != cfg.to_json()[key]:
                raise UserError(
                    f"--resume with a different {key} ({cfg.to_json()[key]!r}) than the run "
                    f"in {cfg.out} ({saved[key]!r})"
                )


def _probabilities(logits: torch.Tensor, task: str) -> np.ndarray:
    return (logits.softmax(1) if task == "single" else logits.sigmoid()).numpy()


@dataclass
class Fitted:
    """What any way of fitting hands to the finishing step."""

    model: nn.Module
    tensors: dict[str, torch.Tensor] | None  # what the bundle stores (None: everything)
    y_train: np.ndarray
    y_val: np.ndarray
    val_probs: np.ndarray
    info: dict[str, Any]


def fit_on_embeddings(
    cfg: TrainConfig,
    spec: ArchSpec,
    mode: str,
    by_split: dict[str, list[PosterRecord]],
    genres: list[str],
    task: str,
) -> Fitted:
    """Linear probe or k-NN on cached frozen embeddings."""
    arch = spec.embedding_arch or spec.name

    def load(paths: list[Path]) -> CachedArrays:
        return compute_embeddings(arch, paths, cfg.cache_dir, cfg.progress)

    train, val = (prepare_split(name, by_split[name], genres, task, load) for name in SPLITS)
    x_train, x_val = (split.batch(np.arange(len(split)))[0] for split in (train, val))
    model = create_model(cfg.arch, len(genres), pretrained=True)
    started = time.perf_counter()
    if mode == "knn":
        info = fit_knn(model, x_train, train.y, x_val, val.y, task, len(genres))
        tensors = model.bundle_tensors()
        val_probs = model.vote(torch.from_numpy(x_val)).numpy()
        echo(f"k-NN: k={info['k']} chosen on val (score {info['val_score']:.4f})")
    else:
        weight, bias, info = fit_linear_probe(
            x_train, train.y, x_val, val.y, task, len(genres), balanced=cfg.balance != "none"
        )
        with torch.no_grad():
            model.classifier.weight.copy_(weight)
            model.classifier.bias.copy_(bias)
        tensors = {"classifier.weight": weight, "classifier.bias": bias}
        val_probs = _probabilities(torch.from_numpy(x_val) @ weight.T + bias, task)
        echo(f"linear probe: C={info['C']} chosen on val (score {info['val_score']:.4f})")
    info["fit_seconds"] = round(time.perf_counter() - started, 2)
    return Fitted(model, tensors, train.y, val.y, val_probs, info)


def fit_with_gradients(
    cfg: TrainConfig,
    spec: ArchSpec,
    mode: str,
    by_split: dict[str, list[PosterRecord]],
    genres: list[str],
    task: str,
) -> Fitted:
    """Seed CNN from scratch, or a Lite backbone fine-tuned end to end (its classifier first
    fitted as a linear probe, so fine-tuning starts from a sensible head)."""
    cache = PosterCache(cfg.cache_dir, spec.input.width, spec.input.height, spec.input.resize)
    splits = {
        name: prepare_split(
            name,
            by_split[name],
            genres,
            task,
            lambda paths: cache.load(paths, progress=cfg.progress),
        )
        for name in ("train", "val")
    }
    counts = describe_counts(genres, class_counts(splits["train"].y, len(genres)))
    echo(f"train {len(splits['train'])} posters {counts}; val {len(splits['val'])}")
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, len(genres), pretrained=spec.pretrained)
    if mode == "finetune" and not cfg.resume:
        echo("fitting a linear probe first to initialise the classifier")
        probe = fit_on_embeddings(cfg, spec, "linear-probe", by_split, genres, task)
        model.load_state_dict(probe.tensors, strict=False)
    optimizer = make_optimizer(spec.optimizer, model, cfg.lr if cfg.lr is not None else spec.lr)
    monitor = cfg.monitor or ("val_balanced_accuracy" if task == "single" else "val_map")
    loop = LoopConfig(
        task=task, epochs=cfg.epochs, batch_size=cfg.batch_size or spec.batch_size,
        seed=cfg.seed, patience=cfg.patience, monitor=monitor, balance=cfg.balance,
        normalisation=spec.input.normalisation,
        augment=Augmentation() if cfg.augment else None, progress=cfg.progress,
    )  # fmt: skip
    state = fit(
        model,
        optimizer,
        splits["train"],
        splits["val"],
        len(genres),
        loop,
        cfg.out,
        resume=cfg.resume,
    )
    val_probs = predict_split(model, splits["val"], spec.input.normalisation, task)
    info = {
        "epochs_run": len(state["history"]),
        "best_epoch": state["best_epoch"],
        "monitor": monitor,
        "stopped": state["stopped"],
    }
    return Fitted(model, None, splits["train"].y, splits["val"].y, val_probs, info)


def train(cfg: TrainConfig) -> Path:
    """Run a whole training job; returns the bundle folder `cfg.out / "model"`."""
    started = time.perf_counter()
    spec = get_arch(cfg.arch)
    mode = resolve_mode(spec, cfg.mode)
    collection = load_posters(
        labels=cfg.labels, images=cfg.images, splits=cfg.splits, folder=cfg.folder
    )
    for message in collection.warnings:
        warn(message)
    genres = resolve_genres(collection, cfg.genres, cfg.min_count)
    task = cfg.task or infer_task(collection.records, genres)
    if task == "multi" and cfg.arch == "seed-cnn" and cfg.task is None:
        task = "single"  # the article's network is single-label unless asked otherwise
    cfg.genres, cfg.task, cfg.mode = genres, task, mode
    gradient = mode in ("scratch", "finetune")
    _check_run_dir(cfg, gradient)
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cfg.out / "config.json", cfg.to_json())
    echo(f"{task}-label task over {len(genres)} genres: {', '.join(genres)} ({mode})")

    by_split = assign_splits(collection, cfg.seed)
    fitter = fit_with_gradients if gradient else fit_on_embeddings
    fitted = fitter(cfg, spec, mode, by_split, genres, task)

    plots = cfg.out / "plots"
    meta: dict[str, Any] = {
        "architecture": cfg.arch,
        "mode": mode,
        "task": task,
        "genres": genres,
        "input": spec.input.to_json(),
    }
    if task == "single":
        val_metrics = single_label_metrics(fitted.y_val, fitted.val_probs, genres)
        plot_confusion_matrix(
            val_metrics["confusion_matrix"],
            genres,
            plots / "confusion_val.png",
            "Validation confusion matrix",
        )
        headline = (
            f"accuracy {val_metrics['accuracy']:.3f}, balanced "
            f"{val_metrics['balanced_accuracy']:.3f}"
        )
    else:
        thresholds = tune_thresholds(fitted.y_val, fitted.val_probs)
        prevalence = fitted.y_train.mean(axis=0)
        val_metrics = multi_label_metrics(
            fitted.y_val, fitted.val_probs, genres, thresholds, prevalence
        )
        meta["thresholds"] = {
            g: round(float(t), 6) for g, t in zip(genres, thresholds, strict=True)
        }
        plot_pr_curves(
            fitted.y_val,
            fitted.val_probs,
            genres,
            plots / "pr_val.png",
            "Validation precision-recall",
        )
        headline = (
            f"mAP {val_metrics['map']:.3f}, micro F1 {val_metrics['micro_f1']:.3f}, "
            f"macro F1 {val_metrics['macro_f1']:.3f}"
        )
    counts = class_counts(fitted.y_train, len(genres))
    meta["training"] = {
        "data": collection.source,
        "splits": {"train": len(fitted.y_train), "val": len(fitted.y_val)},
        "train_genre_counts": describe_counts(genres, counts),
        "train_prevalence": {
            g: round(float(c) / len(fitted.y_train), 6) for g, c in zip(genres, counts, strict=True)
        },
        "seed": cfg.seed,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        **fitted.info,
    }
    meta["metrics"] = {"val": {k: v for k, v in val_metrics.items() if k != "genres"}}
    if fitted.tensors is not None:
        meta["weights"] = "head"
    bundle = save_bundle(cfg.out / "model", fitted.model, meta, fitted.tensors)
    echo(f"val {headline}; model bundle written to {bundle}")
    return bundle
