"""The text channel of a linear probe: OCR text -> TF-IDF of character n-grams and/or the
text's sentence embedding -> logistic regression -> logits that join the image features.

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
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.model_selection import KFold

from postergenre.data.preprocess import InputSpec
from postergenre.data.records import PosterRecord
from postergenre.data.text import DEFAULT_BUCKETS, DEFAULT_OCR, OcrSetting, PosterText, TextSpec
from postergenre.models.card import to_probabilities
from postergenre.training.distributed import echo
from postergenre.training.probe import (
    fit_classifier,
    fit_linear_probe,
    linear_weights,
    validation_score,
)

FOLDS = 5
TEXT_C = (0.3, 1.0, 3.0, 10.0, 30.0)
# What the text model reads: hashed character n-grams (TF-IDF), the all-MiniLM-L6-v2 sentence
# embedding of the text, or both side by side (each row unit length before they are joined).
TEXT_FEATURES = ("ngrams", "sentence", "both")
# How much the text logits weigh beside the image features in the fused probe (chosen on val):
# each standardised text column is multiplied by this before the regularised fit.
TEXT_WEIGHTS = (1.0, 4.0, 16.0)


@dataclass
class TextHead:
    """A fitted text model and the logits it gives the fused probe."""

    spec: TextSpec
    idf: np.ndarray  # (buckets,)
    weight: np.ndarray  # (G, width): on L2-normalised TF-IDF, then on the sentence embedding
    bias: np.ndarray  # (G,)
    train_logits: np.ndarray  # out of fold
    val_logits: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def text_spec(features: str = "ngrams", ocr: OcrSetting = DEFAULT_OCR) -> TextSpec:
    """How a model that reads `features` (one of TEXT_FEATURES) reads text, with `ocr`."""
    if features not in TEXT_FEATURES:
        raise ValueError(f"text features must be one of {TEXT_FEATURES}, not {features!r}")
    buckets = 0 if features == "sentence" else DEFAULT_BUCKETS
    return TextSpec(buckets=buckets, ocr=ocr, sentence=features != "ngrams")


def read_texts(
    records: list[PosterRecord],
    spec: InputSpec,
    cache_dir: Path | None,
    progress: bool,
    ocr: OcrSetting = DEFAULT_OCR,
) -> list[str]:
    """Each poster's OCR text at the model's input size ("" where none could be read)."""
    echo(f"reading the text of {len(records)} posters (OCR, 0.1-1 s per poster per core; cached)")
    texts, _ = PosterText(cache_dir, spec, ocr).load([r.path for r in records], progress=progress)
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
    """Logistic regression on the text's features (`spec`: TF-IDF character n-grams and/or the
    sentence embedding), C chosen on validation."""
    spec = spec or TextSpec()
    tfidf = TfidfTransformer(norm="l2", use_idf=True, smooth_idf=True, sublinear_tf=False)
    if spec.buckets:
        x_train = tfidf.fit_transform(spec.counts(texts_train))  # counts are already sublinear
        x_val = tfidf.transform(spec.counts(texts_val))
        idf = tfidf.idf_.astype(np.float32)
    else:
        x_train, x_val = spec.counts(texts_train), spec.counts(texts_val)
        idf = np.zeros(0, np.float32)
    if spec.sentence:
        echo(f"sentence embeddings of {len(texts_train) + len(texts_val)} texts (all-MiniLM-L6-v2)")
        x_train = hstack([x_train, csr_matrix(spec.embeddings(texts_train))], format="csr")
        x_val = hstack([x_val, csr_matrix(spec.embeddings(texts_val))], format="csr")
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
        idf=idf,
        weight=weight,
        bias=bias,
        train_logits=oof,
        val_logits=np.asarray(x_val @ weight.T + bias),
        info={"C": c, "val_score": score, "grid": tried, "folds": FOLDS},
    )
