"""From corrections to a better model: a linear probe fitted on the cached embeddings of the
posters a person reviewed, optionally starting from a model that already exists.

`retrain_from_corrections` is `postergenre train --labels corrections.csv [--init-from M]`
as one call: the same training run (`training.run.train`), which reads the corrections file
like any label file (only reviewed rows; see `data.labels`). What `--init-from` adds:

- its genre list, so a person who corrected only some genres keeps the others;
- when it is a linear probe on the same backbone, its head as a prior: the new probe is fitted
  toward it (`training.warm_start`), C chosen on held-out corrections, so a few hundred
  corrections adjust a model fitted on thousands of posters instead of replacing it;
- genres that no poster of the fitting part shows keep the model's head as it was (weights and
  calibration): nothing was learnt about them. Without a usable head such genres cannot be
  learnt at all and are left out of the new model, with one line saying so.

The model's metrics (and its calibration and threshold) come from held-out posters: the val
split of the label file, else a seeded 10% of the reviewed posters, never the fitting ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from postergenre.data.csv_files import find_column, open_csv
from postergenre.data.labels import REVIEWED_COLUMN
from postergenre.data.records import PosterCollection
from postergenre.errors import UserError
from postergenre.models.card import ModelCard
from postergenre.models.catalog import resolve_model
from postergenre.training.calibration import Calibration
from postergenre.training.distributed import warn

# Fewer reviewed posters than this leave too few to fit on and to hold out for calibration.
MIN_REVIEWED = 20


class TooFewReviewed(UserError):
    """Too few reviewed posters to retrain on."""

    hint = f"review at least {MIN_REVIEWED} posters first"


@dataclass(frozen=True)
class InitModel:
    """The model a retrain starts from: its card, and its head on raw embeddings (calibrated,
    as the bundle stores it) when it can be a prior, else None and why not."""

    name: str
    card: ModelCard
    weight: np.ndarray | None
    bias: np.ndarray | None
    why_no_head: str = ""
    # An adapted model's tuned network: the probe reads its features (not the frozen
    # backbone's) and the retrained model keeps it, with the new head.
    network: Any = None


@dataclass(frozen=True)
class InitHead:
    """An init model's head laid out over a run's genres (rows of genres it lacks are zero)."""

    prior_weight: np.ndarray  # (G, D) uncalibrated: what class-balanced fitting produced
    prior_bias: np.ndarray
    kept_weight: np.ndarray  # (G, D) as the model predicts (calibrated): for genres kept whole
    kept_bias: np.ndarray
    known: np.ndarray  # (G,) bool: the init model has the genre


def is_corrections_file(labels: str | Path | None) -> bool:
    """Whether a label file says which rows were reviewed (a corrections file)."""
    if labels is None:
        return False
    return find_column(open_csv(labels).fieldnames, (REVIEWED_COLUMN,)) is not None


def default_arch(init_from: str | None) -> str | None:
    """The architecture `train` fits when none is named: the init model's, else None (the
    default, `training.config.DEFAULT_ARCH`, said when the run starts)."""
    if init_from is None:
        return None
    return ModelCard.read(resolve_model(init_from)).architecture


def load_init(init_from: str, arch: str) -> InitModel:
    """The model named by `init_from` (a bundled name, bundle or run folder); its head is taken
    when it is a linear probe on `arch`'s frozen embeddings or an adapted `arch` (whose tuned
    network then stays), and reads no text."""
    from postergenre.models.bundle import load_bundle

    folder = resolve_model(init_from)
    card = ModelCard.read(folder)
    why = ""
    if card.kind not in ("linear-head", "adapted"):
        why = f"it is a {card.kind} model, not a linear probe"
    elif card.architecture != arch:
        why = f"its embeddings are {card.architecture}'s, not {arch}'s"
    elif card.reads_text:
        why = "it also reads the poster's text"
    if why:
        return InitModel(init_from, card, None, None, why)
    model = load_bundle(folder, card).model
    weight = model.classifier.weight.detach().double().numpy()
    bias = model.classifier.bias.detach().double().numpy()
    network = model if card.kind == "adapted" else None
    return InitModel(init_from, card, weight, bias, network=network)


def _uncalibrated(init: InitModel) -> tuple[np.ndarray, np.ndarray]:
    """The head before its calibration was folded in (the prior a class-balanced fit is pulled
    toward); the calibrated head where the card's calibration cannot be undone."""
    assert init.weight is not None and init.bias is not None
    calibration = init.card.training.get("calibration") or {}
    method = calibration.get("method", "none")
    if method == "platt":
        scale, shift = np.asarray(calibration["scale"]), np.asarray(calibration["shift"])
    elif method == "temperature":
        scale = np.full(len(init.bias), 1.0 / float(calibration["temperature"]))
        shift = np.zeros(len(init.bias))
    else:
        return init.weight, init.bias
    if np.abs(scale).min() < 1e-3:  # a flattened genre: its raw head is not recoverable
        return init.weight, init.bias
    return init.weight / scale[:, None], (init.bias - shift) / scale


def init_head(init: InitModel, genres: list[str]) -> InitHead | None:
    """The init model's head over `genres` (None when it has no usable head)."""
    if init.weight is None or init.bias is None:
        return None
    raw_w, raw_b = _uncalibrated(init)
    position = {g: i for i, g in enumerate(init.card.genres)}
    known = np.array([g in position for g in genres])
    shape = (len(genres), init.weight.shape[1])
    arrays = [np.zeros(shape), np.zeros(len(genres)), np.zeros(shape), np.zeros(len(genres))]
    for row, genre in enumerate(genres):
        if genre in position:
            j = position[genre]
            for array, source in zip(arrays, (raw_w, raw_b, init.weight, init.bias), strict=True):
                array[row] = source[j]
    return InitHead(*arrays, known=known)


def inherited_decision(
    init: InitModel, genres: list[str], task: str, info: dict, held_out: int
) -> tuple[Calibration, np.ndarray] | None:
    """The init model's Platt calibration and thresholds over `genres`, when fewer posters are
    held out of the corrections than it was calibrated on (its card's val split): a few hundred
    posters set a threshold and 20 per-genre calibrations worse than thousands (BENCHMARKS.md).
    Genres it lacks keep their raw probabilities and its median threshold; genres it kept
    whole are calibrated already. None when its calibration is to be fitted anew."""
    calibration = init.card.training.get("calibration") or {}
    calibrated_on = int((init.card.training.get("splits") or {}).get("val") or 0)
    if init.weight is None or task != "multi" or calibration.get("method") != "platt":
        return None
    if held_out >= calibrated_on:
        return None
    position = {g: i for i, g in enumerate(init.card.genres)}
    kept = set(info.get("kept_from_init") or [])
    scale, shift = np.ones(len(genres)), np.zeros(len(genres))
    thresholds = np.full(len(genres), float(np.median(init.card.thresholds)))
    for row, genre in enumerate(genres):
        if genre in position:
            thresholds[row] = init.card.thresholds[position[genre]]
            if genre not in kept:
                scale[row] = calibration["scale"][position[genre]]
                shift[row] = calibration["shift"][position[genre]]
    return Calibration("platt", scale, shift), thresholds


def genres_from_init(
    init: InitModel, collection: PosterCollection, asked: list[str] | None
) -> list[str]:
    """The run's genres: `asked`, else the init model's. Genres of the data outside them are
    named in one line; without a usable head, genres no training poster shows are left out."""
    genres = list(asked) if asked else list(init.card.genres)
    train = collection.split("train") if "train" in collection.splits else collection
    counts = train.genre_counts()
    outside = sorted(set(collection.genre_counts()) - set(genres))
    if outside:
        warn(
            f"genres not among {init.name}'s left out: {', '.join(outside)} "
            "(name them with --genres to add them)"
        )
    if init.weight is None:
        unseen = [g for g in genres if not counts.get(g)]
        if unseen:
            warn(
                f"{init.name}'s head cannot be kept ({init.why_no_head}), and no training poster "
                f"shows {', '.join(unseen)}: left out of the new model"
            )
            genres = [g for g in genres if counts.get(g)]
    if len(genres) < 2:
        raise UserError("need at least 2 genres to tell apart")
    return genres


def check_enough(collection: PosterCollection) -> None:
    """Refuse a retrain on fewer than MIN_REVIEWED reviewed posters."""
    if len(collection) < MIN_REVIEWED:
        raise TooFewReviewed(
            f"{collection.source}: {len(collection)} reviewed posters; a retrain needs at least "
            f"{MIN_REVIEWED} (some are held out to calibrate and measure the model)"
        )


def retrain_from_corrections(
    labels: Path,
    out: Path,
    *,
    arch: str = "efficientnet-lite0",
    init_from: str | None = None,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> Path:
    """Fit a linear probe on the cached `arch` embeddings of the reviewed posters of `labels`
    (a corrections file or any label file), optionally starting from model `init_from`, into
    the run folder `out`; returns its bundle folder (`out/model`, written atomically), which
    `Predictor.from_pretrained` loads. `postergenre train --labels ... --init-from ...`."""
    from postergenre.training.config import TrainConfig
    from postergenre.training.run import train

    cfg = TrainConfig(
        out=Path(out),
        arch=arch,
        labels=Path(labels),
        mode="linear-probe",
        task=None if init_from else "multi",
        init_from=init_from,
        cache_dir=cache_dir,
        progress=progress,
    )
    return train(cfg)
