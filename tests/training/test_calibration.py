"""Calibration on validation, folded into the last layer, and the decision rule it implies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from postergenre.evaluation.metrics import calibration as calibration_error
from postergenre.evaluation.thresholds import count_matched_threshold
from postergenre.training.calibration import fit_platt, fit_temperature, fold_into
from postergenre.training.run import TrainConfig, train
from tests.training.test_probe import _multi_label_csv


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def test_temperature_recovers_an_overconfident_softmax():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, size=(4000, 3))
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    fitted = fit_temperature(true_logits * 3.0, y)  # three times too confident
    assert 1 / fitted.scale[0] == pytest.approx(3.0, rel=0.15)
    assert fitted.to_json()["method"] == "temperature"


def test_platt_makes_shifted_probabilities_honest():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, size=(5000, 2))
    y = (rng.random((5000, 2)) < _sigmoid(z)).astype(np.float32)
    distorted = z * 0.5 + 1.5  # what class weights do: everything looks more likely
    before = calibration_error(_sigmoid(distorted), y)["ece"]
    platt = fit_platt(distorted, y)
    after = calibration_error(_sigmoid(platt.apply(distorted)), y)["ece"]
    assert before > 0.1 and after < 0.03
    np.testing.assert_allclose(platt.scale, 2.0, rtol=0.15)


def test_a_genre_without_validation_positives_keeps_its_logits():
    z = np.random.default_rng(2).normal(size=(50, 2))
    y = np.zeros((50, 2), np.float32)
    y[:25, 0] = 1
    platt = fit_platt(z, y)
    assert platt.scale[1] == 1.0 and platt.shift[1] == 0.0


def test_folding_into_the_layer_equals_applying_it():
    torch.manual_seed(0)
    layer = nn.Linear(5, 3)
    x = torch.randn(7, 5)
    before = layer(x).detach().numpy()
    rng = np.random.default_rng(3)
    platt = fit_platt(before, (rng.random((7, 3)) < 0.5).astype(np.float32))
    fold_into(layer, platt)
    np.testing.assert_allclose(layer(x).detach().numpy(), platt.apply(before), atol=1e-5)


def test_count_matched_threshold_keeps_the_number_of_genres_honest():
    rng = np.random.default_rng(4)
    probs = rng.random((500, 10)) ** 2
    y = (rng.random((500, 10)) < probs).astype(np.float32)
    t = count_matched_threshold(y, probs)
    predicted = (probs >= t).sum(1).mean()
    assert abs(predicted - y.sum(1).mean()) <= 0.2 * y.sum(1).mean()
    # a looser tolerance can only do as well or better on micro F1, and may predict more
    assert count_matched_threshold(y, probs, tolerance=10.0) <= t + 1e-9


def test_a_multi_label_probe_is_calibrated_and_uses_one_threshold(tmp_path):
    labels = _multi_label_csv(tmp_path)
    bundle = train(
        TrainConfig(out=tmp_path / "run", labels=labels, arch="efficientnet-lite0",
                    task="multi", progress=False)
    )  # fmt: skip
    card = json.loads((bundle / "model.json").read_text())
    cal = card["training"]["calibration"]
    assert cal["method"] == "platt" and len(cal["scale"]) == 2
    assert len(set(card["thresholds"].values())) == 1
    assert "one threshold" in cal["decision_rule"]
    # every threshold policy is recorded, chosen on val; the card's own are the shared ones
    assert card["threshold_policies"]["shared"] == card["thresholds"]
    assert set(card["threshold_policies"]["per-genre"]) == set(card["thresholds"])
    raw = train(
        TrainConfig(out=tmp_path / "raw", labels=labels, arch="efficientnet-lite0",
                    task="multi", progress=False, calibrate=False)
    )  # fmt: skip
    raw_card = json.loads((raw / "model.json").read_text())
    assert raw_card["training"]["calibration"]["method"] == "none"
    assert "per-genre" in raw_card["training"]["calibration"]["decision_rule"]
    assert raw_card["threshold_policies"]["per-genre"] == raw_card["thresholds"]
    assert "calibrate" in json.loads((tmp_path / "raw" / "config.json").read_text())


def test_a_single_label_probe_keeps_its_accuracy_under_temperature(tiny_posters, tmp_path):
    calibrated = train(TrainConfig(out=tmp_path / "a", folder=tiny_posters,
                                   arch="efficientnet-lite0", progress=False))  # fmt: skip
    raw = train(TrainConfig(out=tmp_path / "b", folder=tiny_posters, arch="efficientnet-lite0",
                            progress=False, calibrate=False))  # fmt: skip
    a, b = (json.loads((p / "model.json").read_text()) for p in (calibrated, raw))
    assert a["training"]["calibration"]["method"] == "temperature"
    assert a["metrics"]["val"]["accuracy"] == b["metrics"]["val"]["accuracy"]
    assert a["metrics"]["val"]["log_loss"] <= b["metrics"]["val"]["log_loss"] + 1e-6
