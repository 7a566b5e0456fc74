"""`postergenre train`: data -> model -> fit -> run folder with plots and the final bundle.

Three ways to fit, chosen by architecture and `--mode`:
- gradient training (seed-cnn from scratch; `--mode finetune` for EfficientNet-Lite), with the
  checkpoint / resume / early-stopping loop of `trainer.fit`;
- `--mode linear-probe` (the Lite default): logistic regression on cached frozen embeddings;
- `--arch knn*`: a k-nearest-neighbour vote over cached frozen embeddings.

The ways of fitting live in `training.fitting`; this module owns the run folder around them.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from postergenre.atomic import remove_stale_temporaries, write_json
from postergenre.data.labels import load_posters
from postergenre.data.targets import (
    class_counts,
    describe_counts,
    infer_task,
    resolve_genres,
)
from postergenre.errors import UserError
from postergenre.evaluation.metrics import multi_label_metrics, single_label_metrics
from postergenre.evaluation.plots import plot_confusion_matrix, plot_precision_figures
from postergenre.evaluation.thresholds import threshold_policies
from postergenre.models import ArchSpec, ModelCard, get_arch
from postergenre.models.bundle import save_bundle
from postergenre.models.card import CARD_FILE, KIND_OF_MODE
from postergenre.training import distributed
from postergenre.training.config import DEFAULT_ARCH, TrainConfig
from postergenre.training.data import assign_splits
from postergenre.training.distributed import echo, warn
from postergenre.training.fitting import (
    FitJob,
    Fitted,
    calibrate,
    fit_on_embeddings,
    fit_with_gradients,
)
from postergenre.training.retrain import (
    InitModel,
    check_enough,
    genres_from_init,
    inherited_decision,
    init_head,
    is_corrections_file,
    load_init,
)


class RunFolderInUse(UserError):
    """The output folder already holds a run (resume it, or train into another folder)."""

    hint = "pass --resume to continue it, or choose another --out"


class NothingToResume(UserError):
    """Asked to resume, but the folder holds no run to continue."""

    hint = "run without --resume to start it"


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


def _check_text_settings(cfg: TrainConfig) -> None:
    """Refuse now, before any work, text settings that cannot run or packages that are missing."""
    from postergenre.data.text import OcrSetting
    from postergenre.training.text import TEXT_FEATURES, text_spec

    if cfg.text_features not in TEXT_FEATURES:
        raise UserError(f"--text-features must be one of {', '.join(TEXT_FEATURES)}, "
                        f"not {cfg.text_features!r}")  # fmt: skip
    if not 32 <= cfg.ocr_det_side <= 4096 or not 0 <= cfg.ocr_max_boxes <= 1000:
        raise UserError("--ocr-det-side must be 32-4096 and --ocr-max-boxes 0-1000")
    text_spec(cfg.text_features, OcrSetting(cfg.ocr_det_side, cfg.ocr_max_boxes)).check_installed()


def train(cfg: TrainConfig) -> Path:
    """Run a whole training job; returns the bundle folder `cfg.out / "model"`.

    Under `torchrun` with several processes, gradient training (seed-cnn, finetune) runs with
    DistributedDataParallel and rank 0 alone writes the run folder. A linear probe or k-NN has
    no gradient loop to share: rank 0 fits it alone and the other ranks return at once."""
    from postergenre.engines.ray_cluster import check_engine

    check_engine(cfg.engine, cfg.address)
    announce = cfg.arch is None  # the default: said once the data has loaded
    spec = get_arch(cfg.arch or DEFAULT_ARCH)
    cfg.arch = spec.name  # as registered, whatever case it was typed in
    mode = resolve_mode(spec, cfg.mode)
    if cfg.engine != "local" and mode == "scratch":
        raise UserError(
            f"the Ray engine computes frozen embeddings; {cfg.arch} has none to compute"
        )
    if cfg.text and mode != "linear-probe":
        raise UserError(
            f"only a linear probe can read poster text; {cfg.arch} is fitted as {mode} here"
        )
    if cfg.text:
        _check_text_settings(cfg)
    if cfg.init_from is not None and (mode != "linear-probe" or cfg.text):
        raise UserError(
            f"--init-from starts a linear probe on image embeddings; {cfg.arch} is fitted as "
            f"{mode}{' with text' if cfg.text else ''} here"
        )
    if distributed.launched() and mode not in ("scratch", "finetune"):
        if not distributed.is_main():
            return cfg.out / "model"
        echo(f"{mode} needs no distributed training: rank 0 fits it alone")
        return _train(cfg, spec, mode, announce)
    with distributed.session():
        return _train(cfg, spec, mode, announce)


def _train(cfg: TrainConfig, spec: ArchSpec, mode: str, announce: bool = False) -> Path:
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
    init = load_init(cfg.init_from, cfg.arch) if cfg.init_from is not None else None
    if init is not None or is_corrections_file(cfg.labels):
        check_enough(collection)
    if init is not None:
        genres = genres_from_init(init, collection, cfg.genres)
        task = cfg.task or init.card.task
    else:
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
    if announce:
        how = (
            "a linear probe: seconds once its embeddings are cached"
            if mode == "linear-probe"
            else mode
        )
        echo(
            f"no --arch given: training {spec.name} ({how}); --arch seed-cnn trains the "
            "article's CNN instead (up to --epochs epochs)"
        )
    echo(f"{task}-label task over {len(genres)} genres: {', '.join(genres)} ({mode})")

    by_split = assign_splits(collection, cfg.seed)
    fitter = fit_with_gradients if gradient else fit_on_embeddings
    if mode == "adapt":
        from postergenre.training.adapt import fit_adapted

        fitter = fit_adapted
    head = init_head(init, genres) if init is not None else None
    network = init.network if init is not None else None
    fitted = fitter(FitJob(cfg, spec, mode, by_split, genres, task, head, network))
    if fitted is None:  # another rank than 0: wait for rank 0's bundle
        distributed.barrier()
        return cfg.out / "model"
    inherited = None
    if init is not None and cfg.calibrate:
        inherited = inherited_decision(init, genres, task, fitted.info, len(fitted.y_val))
    fixed = inherited[0] if inherited is not None else None
    calibration = calibrate(fitted, task, fixed) if cfg.calibrate else {"method": "none"}
    if inherited is not None:
        echo(f"{len(fitted.y_val)} held-out posters, fewer than {init.name} was calibrated on: "
             "its calibration and thresholds kept")  # fmt: skip
    elif calibration["method"] != "none":
        echo(f"probabilities calibrated on val ({calibration['method']} scaling)")

    val_metrics, thresholds, policies, headline = _validate(
        fitted, task, genres, calibration, cfg.out, inherited[1] if inherited else None
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
    if init is not None:
        training["init_from"] = _init_record(init, fitted.info)
    cut = fitted.info["settings"]["cut"] if mode == "adapt" else None
    if network is not None:  # an adapted model retrained: its tuned network, a new head
        assert init is not None
        mode, cut = "adapt", init.card.cut
    card = ModelCard(
        architecture=cfg.arch,
        kind=KIND_OF_MODE[mode],
        task=task,
        genres=tuple(genres),
        input=spec.input,
        thresholds=thresholds,
        threshold_policies=policies,
        name=cfg.out.name,
        mode=mode,
        training=training,
        metrics={"val": {k: v for k, v in val_metrics.items() if k != "genres"}},
        text=fitted.text,
        cut=cut,
    )
    bundle = save_bundle(cfg.out / "model", fitted.model, card)
    echo(f"val {headline}; model bundle written to {bundle}")
    distributed.barrier()
    return bundle


def _init_record(init: InitModel, info: dict[str, Any]) -> dict[str, Any]:
    """What the card says about the model a retrain started from."""
    if init.weight is None:
        used = f"its genres only ({init.why_no_head})"
    else:
        used = f"its genres and its head, as the prior the probe was fitted toward (C={info['C']})"
        echo(f"fitted toward {init.name}'s head: C={info['C']} chosen on val")
    kept = info.get("kept_from_init") or []
    if kept:
        echo(f"no training poster shows {', '.join(kept)}: {init.name}'s head kept for them")
    return {
        "model": init.name,
        "architecture": init.card.architecture,
        "used": used,
        "kept_genres": kept,
    }


def _validate(
    fitted: Fitted,
    task: str,
    genres: list[str],
    calibration: dict[str, Any],
    out: Path,
    fixed_thresholds: np.ndarray | None = None,
) -> tuple[dict[str, Any], tuple[float, ...], dict[str, tuple[float, ...]], str]:
    """Validation metrics, the multi-label decision thresholds (their rule recorded in
    `calibration`; `fixed_thresholds`: those of the model a retrain started from) and every
    threshold policy's, the validation plot in `out/plots`, and the headline line to print."""
    plots = out / "plots"
    thresholds: tuple[float, ...] = ()
    recorded: dict[str, tuple[float, ...]] = {}
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
        # One owner for the thresholds: every policy is chosen on val here and recorded; the
        # card's own are `shared` for a calibrated model, `per-genre` for an uncalibrated one
        # (or, for a retrain that kept its init model's calibration, that model's).
        policies = threshold_policies(fitted.y_val, fitted.val_probs)
        if fixed_thresholds is not None:
            tuned = fixed_thresholds
            rule = "the thresholds of the model it started from (--init-from)"
        elif calibration["method"] == "none":
            tuned = policies["per-genre"]
            rule = "per-genre thresholds maximising F1 on val"
        else:
            tuned = policies["shared"]
            rule = (
                f"one threshold ({tuned[0]:.2f}) for every genre: the best micro F1 on val with "
                "as many genres per poster as the labels (within 20%)"
            )
        if fixed_thresholds is None:  # too few held-out posters otherwise: none recorded
            recorded = {p: tuple(round(float(t), 6) for t in v) for p, v in policies.items()}
        calibration["decision_rule"] = rule
        prevalence = fitted.y_train.mean(axis=0)
        val_metrics = multi_label_metrics(fitted.y_val, fitted.val_probs, genres, tuned, prevalence)
        thresholds = tuple(round(float(t), 6) for t in tuned)
        plot_precision_figures(
            fitted.y_val,
            fitted.val_probs,
            genres,
            plots / "pr_val.png",
            plots / "ap_val.png",
            "val",
        )
        headline = (
            f"mAP {val_metrics['map']:.3f}, micro F1 {val_metrics['micro_f1']:.3f}, "
            f"macro F1 {val_metrics['macro_f1']:.3f}"
        )
    return val_metrics, thresholds, recorded, headline
