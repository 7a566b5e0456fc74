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

from postergenre.atomic import remove_stale_temporaries, write_json
from postergenre.data.cache import CachedArrays, PosterCache
from postergenre.data.labels import load_posters
from postergenre.data.records import PosterRecord
from postergenre.data.targets import (
    class_counts,
    describe_counts,
    infer_task,
    resolve_genres,
)
from postergenre.data.text import TextSpec
from postergenre.data.transforms import Augmentation
from postergenre.errors import UserError
from postergenre.evaluation.metrics import multi_label_metrics, single_label_metrics
from postergenre.evaluation.plots import plot_confusion_matrix, plot_pr_curves
from postergenre.evaluation.thresholds import count_matched_threshold, tune_thresholds
from postergenre.models import ArchSpec, ModelCard, create_model, get_arch
from postergenre.models.bundle import save_bundle
from postergenre.models.card import CARD_FILE, KIND_OF_MODE
from postergenre.models.embeddings import compute_embeddings
from postergenre.models.text_fusion import TextFusion
from postergenre.training import distributed
from postergenre.training.calibration import fit_calibration, fold_into
from postergenre.training.data import assign_splits, prepare_split
from postergenre.training.distributed import echo, warn
from postergenre.training.probe import fit_knn, fit_linear_probe, logit_probabilities
from postergenre.training.text import TextHead, fit_fused_probe, fit_text_head, read_texts
from postergenre.training.trainer import LoopConfig, fit, predict_logits

SPLITS = ("train", "val")
# Settings only gradient training reads: a probe or k-NN run does not record them.
GRADIENT_ONLY = ("epochs", "batch_size", "lr", "patience", "monitor", "augment")


class RunFolderInUse(UserError):
    """The output folder already holds a run (resume it, or train into another folder)."""


class NothingToResume(UserError):
    """Asked to resume, but the folder holds no run to continue."""


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
    max_label_bytes: int | None = None
    calibrate: bool = True
    text: bool = False  # linear probes: also read the poster's text (OCR) and fuse it
    engine: str = "local"  # where frozen embeddings are computed: "local" or "ray"
    address: str | None = None  # the Ray cluster to join (engine "ray"; None: start Ray here)
    resume: bool = False
    progress: bool = True

    def to_json(self) -> dict[str, Any]:
        """Every setting, paths as strings."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def used(self) -> dict[str, Any]:
        """The settings this run actually uses (config.json): a linear probe or k-NN has no
        epochs, learning rate or augmentation, so they are not recorded as if it had."""
        data = self.to_json()
        data.pop("progress", None)
        if self.mode in ("linear-probe", "knn"):
            for key in GRADIENT_ONLY:
                data.pop(key, None)
        if self.mode == "knn":
            data.pop("balance", None)
            data.pop("calibrate", None)
        return data


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
    """The way to fit `spec`: the asked mode if the architecture has it, else its default
    (`scratch` for seed-cnn, `linear-probe` for Lite, `knn` for k-NN)."""
    if mode is None or mode in spec.modes:
        return mode or spec.modes[0]
    if mode == "finetune" and spec.modes == ("scratch",):
        return "scratch"  # training a from-scratch network end to end is what finetune means
    if mode == "linear-probe" and spec.modes == ("knn",):
        return "knn"  # k-NN is the probe-like way of fitting for these architectures
    if not spec.pretrained:
        raise UserError(f"{spec.name} has no pretrained backbone; mode {mode!r} needs one")
    raise UserError(
        f"mode {mode!r} does not apply to {spec.name} (it trains with: {', '.join(spec.modes)})"
    )


def _check_run_dir(cfg: TrainConfig, gradient: bool) -> bool:
    """Whether training continues from a checkpoint. A folder "holds a run" once something was
    saved (a checkpoint, or a probe's bundle); one that was stopped before that (Ctrl-C in the
    first epoch) starts again, with or without `resume`, so the advice and the behaviour agree.
    Temporaries a killed run left behind are removed."""
    last = cfg.out / "checkpoints" / "last.safetensors"
    config = cfg.out / "config.json"
    saved = last.exists() if gradient else (cfg.out / "model" / CARD_FILE).exists()
    if cfg.resume and not (saved or config.exists()):
        raise NothingToResume(f"nothing to resume in {cfg.out}")
    if not cfg.resume and saved:
        raise RunFolderInUse(f"{cfg.out} already holds a run")
    if cfg.resume and config.exists():
        before = json.loads(config.read_text())
        for key in ("arch", "task", "genres", "seed", "mode"):
            if key in before and before[key] != cfg.to_json()[key]:
                raise UserError(
                    f"cannot resume with a different {key} ({cfg.to_json()[key]!r}) than the "
                    f"run in {cfg.out} ({before[key]!r})"
                )
    if config.exists() and not saved:
        echo(f"{cfg.out} holds a run stopped before anything was saved; starting it again")
    if distributed.is_main():
        removed = remove_stale_temporaries(cfg.out)
        removed += remove_stale_temporaries(cfg.out / "checkpoints")
        if removed:
            echo(f"removed {removed} temporary files left by an interrupted run")
    return gradient and cfg.resume and saved


@dataclass
class Fitted:
    """What any way of fitting hands to the finishing step."""

    model: nn.Module
    y_train: np.ndarray
    y_val: np.ndarray
    val_probs: np.ndarray
    info: dict[str, Any]
    val_logits: np.ndarray | None = None  # None for a k-NN vote (no logits to calibrate)
    text: TextSpec | None = None  # how the model reads text, if it does


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
        if cfg.engine == "ray":
            from postergenre.inference.ray_engine import ray_embeddings

            return ray_embeddings(arch, paths, cfg.cache_dir, cfg.progress, address=cfg.address)
        return compute_embeddings(arch, paths, cfg.cache_dir, cfg.progress)

    train, val = (prepare_split(name, by_split[name], genres, task, load) for name in SPLITS)
    x_train, x_val = (split.batch(np.arange(len(split)))[0] for split in (train, val))
    model = create_model(cfg.arch, len(genres), pretrained=True)
    started = time.perf_counter()
    if mode == "knn":
        info = fit_knn(model, x_train, train.y, x_val, val.y, task, len(genres))
        val_probs = model.vote(torch.from_numpy(x_val)).numpy()
        echo(f"k-NN: k={info['k']} chosen on val (score {info['val_score']:.4f})")
    else:
        balanced = cfg.balance != "none"
        text = None
        if cfg.text:
            texts = {s.name: read_texts(s.records, spec.input, cfg.cache_dir, cfg.progress)
                     for s in (train, val)}  # fmt: skip
            text = fit_text_head(texts["train"], train.y, texts["val"], val.y, task,
                                 len(genres), balanced=balanced)  # fmt: skip
            weight, bias, info, x_val = fit_fused_probe(
                x_train, train.y, x_val, val.y, text, task, len(genres), balanced
            )
        else:
            weight, bias, info = fit_linear_probe(
                x_train, train.y, x_val, val.y, task, len(genres), balanced=balanced
            )
        val_logits = (torch.from_numpy(x_val) @ weight.T + bias).numpy()
        if text is not None:
            model = fuse_text(model, weight, bias, text)
            info["text"] = text.info
        else:
            with torch.no_grad():
                model.classifier.weight.copy_(weight)
                model.classifier.bias.copy_(bias)
        echo(f"linear probe: C={info['C']} chosen on val (score {info['val_score']:.4f})")
        info["fit_seconds"] = round(time.perf_counter() - started, 2)
        fitted = Fitted(
            model, train.y, val.y, logit_probabilities(val_logits, task), info, val_logits
        )
        fitted.text = text.spec if text is not None else None
        return fitted
    info["fit_seconds"] = round(time.perf_counter() - started, 2)
    return Fitted(model, train.y, val.y, val_probs, info)


def fuse_text(
    image: nn.Module, weight: torch.Tensor, bias: torch.Tensor, text: TextHead
) -> nn.Module:
    """The fused probe as one model: `weight` acts on [image features, text logits]; the text
    logits are the text head's linear map of the TF-IDF, so both fold into `TextFusion`."""
    n_image = weight.shape[1] - text.weight.shape[0]
    on_text = weight[:, n_image:].double()
    model = TextFusion(image, text.spec.buckets)
    with torch.no_grad():
        model.classifier.weight.copy_(weight[:, :n_image])
        model.classifier.bias.copy_(bias + (on_text @ torch.from_numpy(text.bias)).float())
        model.text.weight.copy_((on_text @ torch.from_numpy(text.weight)).float())
        model.text_idf.copy_(torch.from_numpy(text.idf))
    return model


def fit_with_gradients(
    cfg: TrainConfig,
    spec: ArchSpec,
    mode: str,
    by_split: dict[str, list[PosterRecord]],
    genres: list[str],
    task: str,
) -> Fitted | None:
    """Seed CNN from scratch, or a Lite backbone fine-tuned end to end (its classifier first
    fitted as a linear probe, so fine-tuning starts from a sensible head). Under torchrun,
    rank 0 fills the caches and fits the probe first (DDP copies its weights to the others),
    and only rank 0 gets the fitted model back: the others get None."""
    spec_in = spec.input
    cache = PosterCache(
        cfg.cache_dir, spec_in.width, spec_in.height, spec_in.resize, spec_in.interpolation
    )
    with distributed.main_first():
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
        if mode == "finetune" and not cfg.resume and distributed.is_main():
            echo("fitting a linear probe first to initialise the classifier")
            probe = fit_on_embeddings(cfg, spec, "linear-probe", by_split, genres, task)
            model.load_state_dict(
                {k: v for k, v in probe.model.state_dict().items() if k.startswith("classifier.")},
                strict=False,
            )
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
    if not distributed.is_main():
        return None
    val_logits = predict_logits(model, splits["val"], spec.input.normalisation)
    info = {
        "epochs_run": len(state["history"]),
        "best_epoch": state["best_epoch"],
        "monitor": monitor,
        "stopped": state["stopped"],
    }
    val_probs = logit_probabilities(val_logits, task)
    return Fitted(model, splits["train"].y, splits["val"].y, val_probs, info, val_logits)


def calibrate(fitted: Fitted, task: str) -> dict[str, Any]:
    """Fit the calibration on validation and fold it into the model's last layer."""
    classifier = getattr(fitted.model, "classifier", None)
    if fitted.val_logits is None or not isinstance(classifier, nn.Linear):
        return {"method": "none"}
    calibration = fit_calibration(fitted.val_logits, fitted.y_val, task)
    model = fitted.model
    fold_into(model.output_layers() if isinstance(model, TextFusion) else classifier, calibration)
    fitted.val_logits = calibration.apply(fitted.val_logits).astype(np.float32)
    fitted.val_probs = logit_probabilities(fitted.val_logits, task)
    return calibration.to_json()


def train(cfg: TrainConfig) -> Path:
    """Run a whole training job; returns the bundle folder `cfg.out / "model"`.

    Under `torchrun` with several processes, gradient training (seed-cnn, finetune) runs with
    DistributedDataParallel and rank 0 alone writes the run folder. A linear probe or k-NN has
    no gradient loop to share: rank 0 fits it alone and the other ranks return at once."""
    from postergenre.inference.ray_engine import check_engine

    check_engine(cfg.engine, cfg.address)
    spec = get_arch(cfg.arch)
    mode = resolve_mode(spec, cfg.mode)
    if cfg.engine != "local" and mode == "scratch":
        raise UserError(
            f"the Ray engine computes frozen embeddings; {cfg.arch} has none to compute"
        )
    if cfg.text and mode != "linear-probe":
        raise UserError(
            f"only a linear probe can read poster text; {cfg.arch} is fitted as {mode} here"
        )
    if distributed.launched() and mode not in ("scratch", "finetune"):
        if not distributed.is_main():
            return cfg.out / "model"
        echo(f"{mode} needs no distributed training: rank 0 fits it alone")
        return _train(cfg, spec, mode)
    with distributed.session():
        return _train(cfg, spec, mode)


def _train(cfg: TrainConfig, spec: ArchSpec, mode: str) -> Path:
    started = time.perf_counter()
    cfg.progress = cfg.progress and distributed.is_main()
    collection = load_posters(
        labels=cfg.labels,
        images=cfg.images,
        splits=cfg.splits,
        folder=cfg.folder,
        max_label_bytes=cfg.max_label_bytes,
    )
    for message in collection.warnings:
        warn(message)
    genres = resolve_genres(collection, cfg.genres, cfg.min_count)
    task = cfg.task or infer_task(collection.records, genres)
    if cfg.task is None and spec.default_task is not None:
        task = spec.default_task  # e.g. the article's network: single-label unless asked
    cfg.genres, cfg.task, cfg.mode = genres, task, mode
    gradient = mode in ("scratch", "finetune")
    cfg.resume = _check_run_dir(cfg, gradient)
    distributed.barrier()  # every rank has looked at the run folder before rank 0 writes to it
    if distributed.is_main():
        cfg.out.mkdir(parents=True, exist_ok=True)
        write_json(cfg.out / "config.json", cfg.used())
    echo(f"{task}-label task over {len(genres)} genres: {', '.join(genres)} ({mode})")

    by_split = assign_splits(collection, cfg.seed)
    fitter = fit_with_gradients if gradient else fit_on_embeddings
    fitted = fitter(cfg, spec, mode, by_split, genres, task)
    if fitted is None:  # another rank than 0: wait for rank 0's bundle
        distributed.barrier()
        return cfg.out / "model"
    calibration = calibrate(fitted, task) if cfg.calibrate else {"method": "none"}
    if calibration["method"] != "none":
        echo(f"probabilities calibrated on val ({calibration['method']} scaling)")

    plots = cfg.out / "plots"
    thresholds: tuple[float, ...] = ()
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
        if calibration["method"] == "none":
            tuned = tune_thresholds(fitted.y_val, fitted.val_probs)
            rule = "per-genre thresholds maximising F1 on val"
        else:
            shared = count_matched_threshold(fitted.y_val, fitted.val_probs)
            tuned = np.full(len(genres), shared)
            rule = (
                f"one threshold ({shared:.2f}) for every genre: the best micro F1 on val with "
                "as many genres per poster as the labels (within 20%)"
            )
        calibration["decision_rule"] = rule
        prevalence = fitted.y_train.mean(axis=0)
        val_metrics = multi_label_metrics(fitted.y_val, fitted.val_probs, genres, tuned, prevalence)
        thresholds = tuple(round(float(t), 6) for t in tuned)
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
    training = {
        "data": collection.source,
        "splits": {"train": len(fitted.y_train), "val": len(fitted.y_val)},
        "train_genre_counts": describe_counts(genres, counts),
        "train_prevalence": {
            g: round(float(c) / len(fitted.y_train), 6) for g, c in zip(genres, counts, strict=True)
        },
        "seed": cfg.seed,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "calibration": calibration,
        **fitted.info,
    }
    card = ModelCard(
        architecture=cfg.arch,
        kind=KIND_OF_MODE[mode],
        task=task,
        genres=tuple(genres),
        input=spec.input,
        thresholds=thresholds,
        name=cfg.out.name,
        mode=mode,
        training=training,
        metrics={"val": {k: v for k, v in val_metrics.items() if k != "genres"}},
        text=fitted.text,
    )
    bundle = save_bundle(cfg.out / "model", fitted.model, card)
    echo(f"val {headline}; model bundle written to {bundle}")
    distributed.barrier()
    return bundle
