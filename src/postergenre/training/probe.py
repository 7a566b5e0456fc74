"""Heads on frozen embeddings: a linear probe (logistic regression, scikit-learn) and k-NN.

Both train in seconds once the embeddings are cached; their regularisation (C) or k is chosen
on the validation split.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from postergenre.evaluation.metrics import balanced_accuracy, mean_average_precision
from postergenre.models.card import to_probabilities
from postergenre.models.knn import KNNClassifier
from postergenre.training.warm_start import fit_toward_prior

C_GRID = (0.0001, 0.0003, 0.001, 0.003, 0.01)
# Toward a prior head, smaller C keep more of it (C -> 0 keeps it whole but for the biases).
PRIOR_C_GRID = (0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01)
K_GRID = (5, 10, 20, 40, 80, 160)


def fit_classifier(
    x: Any, y: np.ndarray, task: str, c: float, balanced: bool, max_iter: int
) -> Any:
    """A logistic regression (one-vs-rest for multi-label, class-balanced unless told not)
    fitted on `x`, convergence warnings silenced (C is chosen on validation anyway)."""
    base = LogisticRegression(C=c, class_weight="balanced" if balanced else None, max_iter=max_iter)
    classifier = base if task == "single" else OneVsRestClassifier(base, n_jobs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return classifier.fit(x, y)


def validation_score(task: str, y: np.ndarray, probs: np.ndarray) -> float:
    """The validation score that picks C or k: balanced accuracy, or mAP for multi-label."""
    if task == "single":
        return balanced_accuracy(y, probs.argmax(1))
    return mean_average_precision(y, probs)


def linear_weights(classifier: Any, task: str, n_classes: int, dim: int):
    """(weight (G, D), bias (G,)) of a fitted single-label or one-vs-rest classifier."""
    if task == "single":
        coef, intercept = classifier.coef_, classifier.intercept_
        if coef.shape[0] == 1:  # scikit-learn keeps one row for two classes: sigmoid(z)
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        return coef, intercept
    weight, bias = np.zeros((n_classes, dim)), np.zeros(n_classes)
    for j, estimator in enumerate(classifier.estimators_):
        if hasattr(estimator, "coef_"):
            weight[j], bias[j] = estimator.coef_[0], estimator.intercept_[0]
        else:  # a genre with one class only in training: a constant prediction
            p = float(np.clip(estimator.y_[0] if hasattr(estimator, "y_") else 0.5, 1e-4, 1 - 1e-4))
            bias[j] = np.log(p / (1 - p))
    return weight, bias


def fit_linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    task: str,
    n_classes: int,
    balanced: bool = True,
    column_weights: np.ndarray | None = None,
    prior: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Logistic regression on standardised embeddings, C chosen on validation.

    `column_weights` multiply the standardised columns (a column weighted w is penalised as
    if by C * w**2: how a few fused text logits stand beside thousands of image features).
    `prior`: a head (weight (G, D), bias (G,)) on the raw embeddings to fit toward instead of
    toward zero (`warm_start`), C then chosen from `PRIOR_C_GRID`.
    Returns a linear layer's (weight, bias) acting on the raw embeddings (the standardisation
    and weights folded in), ready to become the network's classifier, and what was tried.
    """
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    if column_weights is not None:
        std = std / column_weights
    xt, xv = (x_train - mean) / std, (x_val - mean) / std
    tried = []
    best: tuple[float, float, tuple[np.ndarray, np.ndarray]] | None = None
    for c in C_GRID if prior is None else PRIOR_C_GRID:
        if prior is None:
            classifier = fit_classifier(xt, y_train, task, c, balanced, max_iter=2000)
            head = linear_weights(classifier, task, n_classes, x_train.shape[1])
        else:
            # The prior acts on raw embeddings: the same head on standardised ones.
            w0 = prior[0] * std[None, :]
            b0 = prior[1] + prior[0] @ mean
            head = fit_toward_prior(xt, y_train, w0, b0, c, task, balanced)
        logits = xv @ head[0].T + head[1]
        score = validation_score(task, y_val, to_probabilities(logits, task))
        tried.append({"C": c, "val_score": score})
        if best is None or score > best[0]:
            best = (score, c, head)
    assert best is not None
    weight, bias = best[2]
    folded_w = weight / std[None, :]
    folded_b = bias - (weight * (mean / std)[None, :]).sum(axis=1)
    info = {"C": best[1], "val_score": best[0], "grid": tried, "standardised": True}
    if prior is not None:
        info["toward_prior"] = True
    return (
        torch.tensor(folded_w, dtype=torch.float32),
        torch.tensor(folded_b, dtype=torch.float32),
        info,
    )


def fit_knn(
    model: KNNClassifier,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    task: str,
    n_classes: int,
) -> dict[str, Any]:
    """Fill the k-NN memory with the training embeddings and choose k on validation."""
    labels = np.eye(n_classes, dtype=np.float32)[y_train] if task == "single" else y_train
    model.set_memory(
        torch.from_numpy(x_train), torch.from_numpy(labels), K_GRID[0], multi=task == "multi"
    )
    tried = []
    for k in K_GRID:
        if k > len(x_train):
            break
        probs = model.vote(torch.from_numpy(x_val), k).numpy()
        tried.append({"k": k, "val_score": validation_score(task, y_val, probs)})
    best = max(tried, key=lambda row: row["val_score"])
    model.k = torch.tensor(best["k"])
    return {"k": best["k"], "val_score": best["val_score"], "grid": tried}
