"""`postergenre train`: data -> model -> loop -> run folder with plots and the final bundle."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from postergenre.console import echo, warn
from postergenre.data.cache import PosterCache
from postergenre.data.labels import load_posters
from postergenre.data.targets import class_counts, describe_counts, infer_task, resolve_genres
from postergenre.data.transforms import Augmentation
from postergenre.errors import UserError
from postergenre.evaluation.metrics import single_label_metrics
from postergenre.evaluation.plots import plot_confusion_matrix
from postergenre.models import create_model, get_arch
from postergenre.models.bundle import save_bundle, write_json_atomic
from postergenre.training.data import SplitData, assign_splits, prepare_split
from postergenre.training.trainer import LoopConfig, fit, predict_split


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
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def make_optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    """RMSprop with Keras's defaults (the article), or AdamW."""
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    raise ValueError(f"unknown optimizer {name!r}")


def _check_run_dir(cfg: TrainConfig) -> None:
    last = cfg.out / "checkpoints" / "last.safetensors"
    if cfg.resume and not last.exists():
        raise UserError(f"nothing to resume: {last} does not exist")
    if not cfg.resume and last.exists():
        raise UserError(f"{cfg.out} already holds a run; pass --resume or choose another --out")
    if cfg.resume:
        saved = json.loads((cfg.out / "config.json").read_text())
        for key in ("arch", "task", "genres", "seed", "mode"):
            if key in saved and saved[key] != cfg.to_json()[key]:
                raise UserError(
                    f"--resume with a different {key} ({cfg.to_json()[key]!r}) than the run "
                    f"in {cfg.out} ({saved[key]!r})"
                )


def training_summary(
    cfg: TrainConfig, splits: dict[str, SplitData], genres: list[str], collection_source: str
) -> dict[str, Any]:
    """The `training` section of model.json."""
    return {
        "data": collection_source,
        "splits": {name: len(split) for name, split in splits.items()},
        "train_genre_counts": describe_counts(genres, class_counts(splits["train"].y, len(genres))),
        "seed": cfg.seed,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def train(cfg: TrainConfig) -> Path:
    """Run a whole training job; returns the bundle folder `cfg.out / "model"`."""
    started = time.perf_counter()
    spec = get_arch(cfg.arch)
    collection = load_posters(
        labels=cfg.labels, images=cfg.images, splits=cfg.splits, folder=cfg.folder
    )
    for message in collection.warnings:
        warn(message)
    genres = resolve_genres(collection, cfg.genres, cfg.min_count)
    task = cfg.task or infer_task(collection.records, genres)
    if task == "multi" and cfg.arch == "seed-cnn" and cfg.task is None:
        task = "single"  # the article's network is single-label unless asked otherwise
    cfg.genres, cfg.task = genres, task
    _check_run_dir(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cfg.out / "config.json", cfg.to_json())

    echo(f"{task}-label task over {len(genres)} genres: {', '.join(genres)}")
    by_split = assign_splits(collection, cfg.seed)
    cache = PosterCache(cfg.cache_dir, spec.input.width, spec.input.height, spec.input.resize)
    splits = {
        name: prepare_split(name, by_split[name], genres, task, cache, cfg.progress)
        for name in ("train", "val")
    }
    counts = describe_counts(genres, class_counts(splits["train"].y, len(genres)))
    echo(f"train {len(splits['train'])} posters {counts}; val {len(splits['val'])}")

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, len(genres), pretrained=spec.pretrained)
    optimizer = make_optimizer(
        spec.optimizer, model.parameters(), cfg.lr if cfg.lr is not None else spec.lr
    )
    monitor = cfg.monitor or ("val_balanced_accuracy" if task == "single" else "val_map")
    loop = LoopConfig(
        task=task,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size or spec.batch_size,
        seed=cfg.seed,
        patience=cfg.patience,
        monitor=monitor,
        balance=cfg.balance,
        normalisation=spec.input.normalisation,
        augment=Augmentation() if cfg.augment else None,
        progress=cfg.progress,
    )
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
    metrics = {"val": single_label_metrics(splits["val"].y, val_probs, genres)}
    plot_confusion_matrix(
        metrics["val"]["confusion_matrix"],
        genres,
        cfg.out / "plots" / "confusion_val.png",
        "Validation confusion matrix",
    )
    meta = {
        "architecture": cfg.arch,
        "task": task,
        "genres": genres,
        "input": spec.input.to_json(),
        "training": {
            **training_summary(cfg, splits, genres, collection.source),
            "epochs_run": len(state["history"]),
            "best_epoch": state["best_epoch"],
            "monitor": monitor,
            "stopped": state["stopped"],
            "seconds": round(time.perf_counter() - started, 1),
        },
        "metrics": {"val": {k: v for k, v in metrics["val"].items() if k != "genres"}},
    }
    bundle = save_bundle(cfg.out / "model", model, meta)
    echo(
        f"val accuracy {metrics['val']['accuracy']:.3f}, balanced "
        f"{metrics['val']['balanced_accuracy']:.3f}; model bundle written to {bundle}"
    )
    return bundle
