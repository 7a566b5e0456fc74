"""The text channel of a linear probe: OCR text -> TF-IDF -> logistic regression -> logits
that join the image features.

The training posters' text logits are taken out of fold (`FOLDS` folds), so the fused probe
learns how far to trust text it has not memorised; val and (later) every new poster get the
text model fitted on all of train. Both parts are linear, so the fused model is the image
classifier plus one linear map of the TF-IDF (`postergenre.models.text_fusion.TextFusion`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.model_selection import KFold

from postergenre.data.preprocess import InputSpec
from postergenre.data.records import PosterRecord
from postergenre.data.text import PosterText, TextSpec
from postergenre.models.card import to_probabilities
from postergenre.training.distributed import echo
from postergenre.training.probe import (
    fit_classifier,
    fit_linear_probe,
    linear_weights,
    validation_score,
)

FOLDS = 5
TEXT_C = (0.3, 1.0, 3.0, 10.0)
# How much the text logits weigh beside the image features in the fused probe (chosen on val):
# each standardised text column is multiplied by this before the regularised fit.
TEXT_WEIGHTS = (1.0, 4.0, 16.0)


@dataclass
class TextHead:
    """A fitted text model and the logits it gives the fused probe."""

    spec: TextSpec
    idf: np.ndarray  # (buckets,)
    weight: np.ndarray  # (G, buckets), on L2-normalised TF-IDF
    bias: np.ndarray  # (G,)
    train_logits: np.ndarray  # out of fold
    val_logits: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def read_texts(
    records: list[PosterRecord], spec: InputSpec, cache_dir: Path | None, progress: bool
) -> list[str]:
    """Each poster's OCR text at the model's input size ("" where none could be read)."""
    echo(f"reading the text of {len(records)} posters (OCR, about 1 s per poster per core; cached)")
    texts, _ = PosterText(cache_dir, spec).load([r.path for r in records], progress=progress)
    return [t or "" for t in texts]


def fit_fused_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    text: TextHead,
    task: str,
    n_classes: int,
    balanced: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any], np.ndarray]:
    """The linear probe on [image features, text logits], the text's weight chosen on val.

    Returns (weight, bias, info, the fused val features)."""
    xt = np.hstack([x_train, text.train_logits]).astype(np.float32)
    xv = np.hstack([x_val, text.val_logits]).astype(np.float32)
    best = None
    for text_weight in TEXT_WEIGHTS:
        columns = np.ones(xt.shape[1])
        columns[x_train.shape[1] :] = text_weight
        weight, bias, info = fit_linear_probe(
            xt, y_train, xv, y_val, task, n_classes, balanced, column_weights=columns
        )
        echo(f"fused probe, text weight {text_weight:g}: val score {info['val_score']:.4f}")
        if best is None or info["val_score"] > best[2]["val_score"]:
            best = (weight, bias, {**info, "text_weight": text_weight})
    assert best is not None
    return (*best, xv)


def _fit(x: Any, y: np.ndarray, task: str, c: float, n_classes: int, balanced: bool):
    classifier = fit_classifier(x, y, task, c, balanced, max_iter=3000)
    weight, bias = linear_weights(classifier, task, n_classes, x.shape[1])
    return np.asarray(weight), np.asarray(bias)


def fit_text_head(
    texts_train: list[str],
    y_train: np.ndarray,
    texts_val: list[str],
    y_val: np.ndarray,
    task: str,
    n_classes: int,
    spec: TextSpec | None = None,
    balanced: bool = True,
) -> TextHead:
    """Logistic regression on TF-IDF character n-grams, C chosen on validation."""
    spec = spec or TextSpec()
    tfidf = TfidfTransformer(norm="l2", use_idf=True, smooth_idf=True, sublinear_tf=False)
    x_train = tfidf.fit_transform(spec.counts(texts_train))  # counts are already sublinear
    x_val = tfidf.transform(spec.counts(texts_val))
    tried, best = [], None
    for c in TEXT_C:
        weight, bias = _fit(x_train, y_train, task, c, n_classes, balanced)
        logits = x_val @ weight.T + bias
        score = validation_score(task, y_val, to_probabilities(logits, task))
        tried.append({"C": c, "val_score": round(score, 6)})
        if best is None or score > best[0]:
            best = (score, c, weight, bias)
    assert best is not None
    score, c, weight, bias = best
    echo(f"text model: C={c} chosen on val (score {score:.4f} from text alone)")
    oof = np.zeros((x_train.shape[0], n_classes))
    for inside, outside in KFold(FOLDS, shuffle=True, random_state=0).split(x_train):
        fold_w, fold_b = _fit(x_train[inside], y_train[inside], task, c, n_classes, balanced)
        oof[outside] = x_train[outside] @ fold_w.T + fold_b
    return TextHead(
        spec=spec,
        idf=tfidf.idf_.astype(np.float32),
        weight=weight,
        bias=bias,
        train_logits=oof,
        val_logits=np.asarray(x_val @ weight.T + bias),
        info={"C": c, "val_score": score, "grid": tried, "folds": FOLDS},
    )
