"""The ways of fitting a model once the data is split: a linear probe or k-NN on cached frozen
embeddings (optionally fused with the poster's text), or gradient training (seed CNN from
scratch, Lite fine-tuned), and the calibration folded into the fitted model."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from postergenre.data.cache import CachedArrays, PosterCache
from postergenre.data.records import PosterRecord
from postergenre.data.targets import class_counts, describe_counts
from postergenre.data.text import OcrSetting, TextSpec
from postergenre.data.transforms import Augmentation
from postergenre.models import ArchSpec, create_model
from postergenre.models.card import to_probabilities
from postergenre.models.embeddings import compute_embeddings
from postergenre.models.text_fusion import TextFusion
from postergenre.training import distributed
from postergenre.training.calibration import Calibration, fit_calibration, fold_into
from postergenre.training.config import GRADIENT_EPOCHS, TrainConfig
from postergenre.training.data import prepare_split
from postergenre.training.distributed import echo
from postergenre.training.probe import fit_knn, fit_linear_probe
from postergenre.training.retrain import InitHead
from postergenre.training.text import (
    TextHead,
    fit_fused_probe,
    fit_text_head,
    read_texts,
    text_spec,
)
from postergenre.training.trainer import LoopConfig, fit, predict_logits

SPLITS = ("train", "val")


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


@dataclass(frozen=True)
class FitJob:
    """What every way of fitting is given: the run's settings, the architecture and how to fit
    it, the posters of each split, the genres and the task."""

    cfg: TrainConfig
    spec: ArchSpec
    mode: str
    by_split: dict[str, list[PosterRecord]]
    genres: list[str]
    task: str
    init: InitHead | None = None  # a head to fit a linear probe toward (`training.retrain`)
    # A tuned network whose own features the probe reads and which the model keeps (an
    # adapted model being retrained); None: the architecture's frozen embeddings.
    network: nn.Module | None = None

    def unpack(
        self,
    ) -> tuple[TrainConfig, ArchSpec, str, dict[str, list[PosterRecord]], list[str], str]:
        return self.cfg, self.spec, self.mode, self.by_split, self.genres, self.task


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


def fit_on_embeddings(job: FitJob) -> Fitted:
    """Linear probe or k-NN on cached frozen embeddings."""
    cfg, spec, mode, by_split, genres, task = job.unpack()
    arch = spec.embedding_arch or spec.name

    def load(paths: list[Path]) -> CachedArrays:
        if cfg.engine == "ray":
            from postergenre.engines.ray import ray_embeddings

            return ray_embeddings(arch, paths, cfg.cache_dir, cfg.progress, address=cfg.address)
        return compute_embeddings(arch, paths, cfg.cache_dir, cfg.progress, job.network)

    train, val = (prepare_split(name, by_split[name], genres, task, load) for name in SPLITS)
    x_train, x_val = (split.batch(np.arange(len(split)))[0] for split in (train, val))
    if job.network is not None:
        model = copy.deepcopy(job.network)
        model.classifier = nn.Linear(model.classifier.in_features, len(genres))
    else:
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
            reading = text_spec(cfg.text_features, OcrSetting(cfg.ocr_det_side, cfg.ocr_max_boxes))
            texts = {s.name: read_texts(s.records, spec.input, cfg.cache_dir, cfg.progress,
                                        reading.ocr) for s in (train, val)}  # fmt: skip
            text = fit_text_head(texts["train"], train.y, texts["val"], val.y, task,
                                 len(genres), reading, balanced=balanced)  # fmt: skip
            weight, bias, info, x_val = fit_fused_probe(
                x_train, train.y, x_val, val.y, text, task, len(genres), balanced
            )
        else:
            weight, bias, info = _fit_probe(job, x_train, train.y, x_val, val.y, balanced)
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
        fitted = Fitted(model, train.y, val.y, to_probabilities(val_logits, task), info, val_logits)
        fitted.text = text.spec if text is not None else None
        return fitted
    info["fit_seconds"] = round(time.perf_counter() - started, 2)
    return Fitted(model, train.y, val.y, val_probs, info)


def _fit_probe(
    job: FitJob,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    balanced: bool,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The image-only linear probe, toward the init model's head when there is one. A
    multi-label genre no training poster shows then keeps that head's row as it was."""
    init, n = job.init, len(job.genres)
    if init is None:
        return fit_linear_probe(x_train, y_train, x_val, y_val, job.task, n, balanced=balanced)
    prior = (init.prior_weight, init.prior_bias)
    weight, bias, info = fit_linear_probe(
        x_train, y_train, x_val, y_val, job.task, n, balanced=balanced, prior=prior
    )
    if job.task == "multi":
        kept = init.known & (y_train.sum(axis=0) == 0)
        weight[kept] = torch.from_numpy(init.kept_weight[kept]).float()
        bias[kept] = torch.from_numpy(init.kept_bias[kept]).float()
        info["kept_from_init"] = [g for g, k in zip(job.genres, kept, strict=True) if k]
    return weight, bias, info


def fuse_text(
    image: nn.Module, weight: torch.Tensor, bias: torch.Tensor, text: TextHead
) -> nn.Module:
    """The fused probe as one model: `weight` acts on [image features, text logits]; the text
    logits are the text head's linear map of the TF-IDF, so both fold into `TextFusion`."""
    n_image = weight.shape[1] - text.weight.shape[0]
    on_text = weight[:, n_image:].double()
    model = TextFusion(image, text.spec.buckets, text.spec.width - text.spec.buckets)
    with torch.no_grad():
        model.classifier.weight.copy_(weight[:, :n_image])
        model.classifier.bias.copy_(bias + (on_text @ torch.from_numpy(text.bias)).float())
        model.text.weight.copy_((on_text @ torch.from_numpy(text.weight)).float())
        model.text_idf.copy_(torch.from_numpy(text.idf))
    return model


def fit_with_gradients(job: FitJob) -> Fitted | None:
    """Seed CNN from scratch, or a Lite backbone fine-tuned end to end (its classifier first
    fitted as a linear probe, so fine-tuning starts from a sensible head). Under torchrun,
    rank 0 fills the caches and fits the probe first (DDP copies its weights to the others),
    and only rank 0 gets the fitted model back: the others get None."""
    cfg, spec, mode, by_split, genres, task = job.unpack()
    cache = PosterCache(cfg.cache_dir, spec.input)
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
            probe = fit_on_embeddings(replace(job, mode="linear-probe"))
            model.load_state_dict(
                {k: v for k, v in probe.model.state_dict().items() if k.startswith("classifier.")},
                strict=False,
            )
    optimizer = make_optimizer(spec.optimizer, model, cfg.lr if cfg.lr is not None else spec.lr)
    monitor = cfg.monitor or ("val_balanced_accuracy" if task == "single" else "val_map")
    loop = LoopConfig(
        task=task, epochs=cfg.epochs or GRADIENT_EPOCHS,
        batch_size=cfg.batch_size or spec.batch_size, seed=cfg.seed, patience=cfg.patience,
        monitor=monitor, balance=cfg.balance,
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
    val_probs = to_probabilities(val_logits, task)
    return Fitted(model, splits["train"].y, splits["val"].y, val_probs, info, val_logits)


def calibrate(fitted: Fitted, task: str, fixed: Calibration | None = None) -> dict[str, Any]:
    """Fit the calibration on validation (or take the `fixed` one) and fold it into the
    model's last layer."""
    classifier = getattr(fitted.model, "classifier", None)
    if fitted.val_logits is None or not isinstance(classifier, nn.Linear):
        return {"method": "none"}
    calibration = fixed or fit_calibration(fitted.val_logits, fitted.y_val, task)
    model = fitted.model
    fold_into(model.output_layers() if isinstance(model, TextFusion) else classifier, calibration)
    fitted.val_logits = calibration.apply(fitted.val_logits).astype(np.float32)
    fitted.val_probs = to_probabilities(fitted.val_logits, task)
    return calibration.to_json()
