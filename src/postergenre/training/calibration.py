"""Calibrating a trained model's probabilities on validation, folded into its last layer.

Class-balanced training (the default) shifts every probability towards the rare genres, so a
shown 60% would not come true 60% of the time. After fitting, a per-output affine map of the
logits is fitted on the validation split and folded into the final linear layer, so the bundle
needs no extra step and every runtime (PyTorch, ONNX) gives the calibrated numbers:

- multi-label: Platt scaling per genre, `sigmoid(a_g * z_g + b_g)`;
- single-label: temperature scaling, `softmax(z / T)`, which keeps the argmax (and accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression
from torch import nn

# Platt's fit is nearly unregularised; a genre with too few validation positives keeps its raw
# logits rather than a fit to a handful of posters.
PLATT_C = 1e4
MIN_POSITIVES = 3


@dataclass(frozen=True)
class Calibration:
    """`calibrated logit = scale * logit + shift`, per output."""

    method: str
    scale: np.ndarray
    shift: np.ndarray

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return logits * self.scale + self.shift

    def to_json(self) -> dict[str, Any]:
        if self.method == "temperature":
            return {"method": self.method, "temperature": round(1.0 / float(self.scale[0]), 6)}
        return {
            "method": self.method,
            "scale": [round(float(v), 6) for v in self.scale],
            "shift": [round(float(v), 6) for v in self.shift],
        }


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> Calibration:
    """The temperature minimising the validation log loss of a softmax model."""
    logits = logits.astype(np.float64)

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    best = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
    scale = np.full(logits.shape[1], float(np.exp(-best.x)))
    return Calibration("temperature", scale, np.zeros(logits.shape[1]))


def fit_platt(logits: np.ndarray, y: np.ndarray) -> Calibration:
    """Per-genre (a, b) so that sigmoid(a z + b) fits the validation labels."""
    scale, shift = np.ones(logits.shape[1]), np.zeros(logits.shape[1])
    for j in range(logits.shape[1]):
        positives = int(y[:, j].sum())
        if positives < MIN_POSITIVES or positives > len(y) - MIN_POSITIVES:
            continue
        fit = LogisticRegression(C=PLATT_C, max_iter=1000).fit(logits[:, j : j + 1], y[:, j])
        scale[j], shift[j] = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    return Calibration("platt", scale, shift)


def fit_calibration(logits: np.ndarray, y: np.ndarray, task: str) -> Calibration:
    """Temperature (single-label) or per-genre Platt scaling (multi-label) on validation."""
    return fit_temperature(logits, y) if task == "single" else fit_platt(logits, y)


def fold_into(layers: nn.Linear | Sequence[nn.Linear], calibration: Calibration) -> None:
    """Make the linear layers whose outputs sum to the logits (a classifier; with text, also
    the text's layer) output calibrated logits: every weight scaled, the bias scaled and
    shifted (only one of the layers has a bias)."""
    layers = [layers] if isinstance(layers, nn.Linear) else list(layers)
    if sum(layer.bias is not None for layer in layers) != 1:
        raise ValueError("calibration folds into layers with exactly one bias between them")
    for layer in layers:
        scale = torch.as_tensor(calibration.scale, dtype=layer.weight.dtype)
        shift = torch.as_tensor(calibration.shift, dtype=layer.weight.dtype)
        with torch.no_grad():
            layer.weight.mul_(scale[:, None])
            if layer.bias is not None:
                layer.bias.mul_(scale).add_(shift)
