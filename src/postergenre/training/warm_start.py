"""A linear probe fitted toward another model's head: logistic regression whose L2 penalty
pulls the weights toward a prior `W0` instead of toward zero,

    0.5 * ||W - W0||^2 + C * sum_i weight_i * loss(x_i W^T + b, y_i),

the objective scikit-learn's `LogisticRegression` minimises when `W0 = 0` (same class
balancing, unpenalised bias), so with a zero prior both give the same head. A small C keeps
the prior's head, a large one refits from the data alone: C, chosen on validation, says how
far a few hundred corrections should move a model fitted on thousands of posters.

scikit-learn has no prior mean (its `warm_start` only moves the starting point of a solver
that converges to the same optimum), hence this small full-batch L-BFGS in torch. All genres of
a multi-label head are fitted at once: their problems are independent, so the joint optimum
is each genre's optimum.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional

MAX_ITER = 500


def balanced_weights(y: np.ndarray, task: str, n_classes: int) -> np.ndarray:
    """Per-example (single: (n,)) or per-example-and-genre (multi: (n, G)) loss weights, as
    scikit-learn's class_weight="balanced" gives each binary or multinomial problem:
    n / (classes * count of the example's class)."""
    n = len(y)
    if task == "single":
        counts = np.bincount(y, minlength=n_classes).astype(np.float32)
        present = counts > 0
        per_class = np.where(present, n / (present.sum() * np.maximum(counts, 1)), 0.0)
        return per_class[y]
    positives = y.sum(axis=0).astype(np.float32)
    negatives = n - positives
    # A genre with one class only in the data is a one-class problem: every example weighs 1.
    both = (positives > 0) & (negatives > 0)
    w_pos = np.where(both, n / (2 * np.maximum(positives, 1)), 1.0)
    w_neg = np.where(both, n / (2 * np.maximum(negatives, 1)), 1.0)
    return np.where(y > 0, w_pos[None, :], w_neg[None, :])


def fit_toward_prior(
    x: np.ndarray,
    y: np.ndarray,
    prior_weight: np.ndarray,
    prior_bias: np.ndarray,
    c: float,
    task: str,
    balanced: bool = True,
    max_iter: int = MAX_ITER,
) -> tuple[np.ndarray, np.ndarray]:
    """(weight (G, D), bias (G,)) minimising the module's objective on (standardised) `x`,
    starting from the prior. `y`: class indices (single) or 0/1 rows (multi)."""
    n_classes = prior_weight.shape[0]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    w0 = torch.from_numpy(np.asarray(prior_weight, dtype=np.float32))
    sample = (
        balanced_weights(y, task, n_classes)
        if balanced
        else np.ones(y.shape if task == "multi" else len(y))
    )
    sw = torch.from_numpy(np.asarray(sample, dtype=np.float32))
    target = torch.from_numpy(np.asarray(y, dtype=np.int64 if task == "single" else np.float32))
    weight = w0.clone().requires_grad_(True)
    bias = torch.tensor(np.asarray(prior_bias, dtype=np.float32), requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        logits = xt @ weight.T + bias
        if task == "single":
            losses = functional.cross_entropy(logits, target, reduction="none")
        else:
            losses = functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        value = 0.5 * (weight - w0).pow(2).sum() + c * (sw * losses).sum()
        value.backward()
        return value

    optimizer.step(objective)
    return weight.detach().numpy(), bias.detach().numpy()
