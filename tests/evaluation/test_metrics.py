"""Metrics against values computed by hand."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from postergenre.data.records import PosterRecord
from postergenre.evaluation.metrics import (
    balanced_accuracy,
    mean_average_precision,
    multi_label_metrics,
    single_label_metrics,
)
from postergenre.evaluation.report import evaluate_single_label, format_single_label

GENRES = ["Action", "Comedy", "Drama"]


def _one_hot_probs(pred: list[int], k: int = 3) -> np.ndarray:
    probs = np.full((len(pred), k), 0.1)
    probs[np.arange(len(pred)), pred] = 0.8
    return probs


def test_balanced_accuracy_is_the_mean_recall_of_the_genres_posters_have():
    y_true = np.array([0, 0, 1, 1, 1, 1])
    # genre 2 is predicted but no poster has it: it has no recall and does not count
    y_pred = np.array([0, 2, 1, 1, 1, 0])
    assert balanced_accuracy(y_true, y_pred) == pytest.approx((0.5 + 0.75) / 2)
    assert balanced_accuracy(np.array([], int), np.array([], int)) == 0.0


def test_balanced_accuracy_agrees_with_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        y_true, y_pred = rng.integers(0, 4, 30), rng.integers(0, 3, 30)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
            expected = balanced_accuracy_score(y_true, y_pred)
        assert balanced_accuracy(y_true, y_pred) == expected


def test_single_label_metrics_match_hand_computed_values():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    probs = _one_hot_probs([0, 1, 1, 1, 2, 0])
    m = single_label_metrics(y_true, probs, GENRES)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert m["per_genre"]["Action"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert m["per_genre"]["Comedy"]["precision"] == pytest.approx(2 / 3)
    assert m["per_genre"]["Comedy"]["f1"] == pytest.approx(0.8)
    assert m["per_genre"]["Drama"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_mean_average_precision_skips_genres_without_positives():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
    probs = np.array([[0.9, 0.2, 0.5], [0.1, 0.3, 0.5], [0.4, 0.1, 0.5], [0.5, 0.9, 0.5]])
    # Action: positives ranked 1st and 3rd -> AP = (1/1 + 2/3) / 2; Comedy: positive ranked 2nd
    # -> AP = 1/2; Drama has no positive and is left out.
    assert mean_average_precision(y, probs) == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)


def _records(genres: list[tuple[str, ...]]) -> list[PosterRecord]:
    return [PosterRecord(str(i), Path(f"{i}.jpg"), g) for i, g in enumerate(genres)]


def test_evaluation_chooses_among_the_genres_present():
    # The model's favourite is Action everywhere, but the data has only Comedy and Drama:
    # the decision is between those two, and Action is reported as ignored.
    records = _records([("Comedy",), ("Drama",), ("Drama",), ("Western",), ("Comedy", "Drama")])
    probs = np.array(
        [[0.7, 0.2, 0.1], [0.6, 0.1, 0.3], [0.5, 0.3, 0.2], [0.4, 0.3, 0.3], [0.3, 0.3, 0.4]]
    )
    m = evaluate_single_label(records, probs, GENRES)
    assert m["genres"] == ["Comedy", "Drama"]
    assert m["ignored_genres"] == ["Action"]
    assert m["unknown_genres"] == ["Western"]
    assert m["skipped"] == {"unknown_genre": 1, "several_genres": 1}
    assert m["n"] == 3
    assert m["accuracy"] == pytest.approx(2 / 3)  # the third poster picks Comedy over Drama
    report = format_single_label(m)
    assert "ignored" in report and "Western" in report


def test_both_reports_end_with_the_genres_only_one_side_knows():
    from postergenre.evaluation.report import evaluate_multi_label, format_multi_label

    records = _records([("Comedy",), ("Drama",), ("Drama",), ("Western",)])
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.1, 0.3], [0.5, 0.3, 0.2], [0.4, 0.3, 0.3]])
    single = evaluate_single_label(records, probs, GENRES)
    multi = evaluate_multi_label(records, probs, GENRES, np.full(3, 0.5))
    ending = (
        "\nmodel genres absent from the data (ignored): Action\n"
        "data genres the model does not know (left out): Western"
    )
    for metrics, report in ((single, format_single_label), (multi, format_multi_label)):
        assert (metrics["ignored_genres"], metrics["unknown_genres"]) == (["Action"], ["Western"])
        assert report(metrics).endswith(ending)


def test_multi_label_metrics_match_hand_computed_values():
    from postergenre.evaluation.metrics import multi_label_metrics

    genres = ["Drama", "Comedy", "Horror"]
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    probs = np.array([[0.9, 0.2, 0.1], [0.6, 0.7, 0.3], [0.4, 0.8, 0.2], [0.3, 0.1, 0.6]])
    thresholds = np.array([0.5, 0.5, 0.5])
    m = multi_label_metrics(
        y, probs, genres, thresholds, train_prevalence=np.array([0.5, 0.4, 0.1])
    )
    # Drama and Comedy are ranked perfectly (AP 1); Horror has no positive and is left out.
    assert m["map"] == pytest.approx(1.0)
    assert m["per_genre"]["Horror"]["ap"] is None
    # Predictions at 0.5: TP = 4 (all true labels), FP = 1 (Horror on the last poster).
    assert m["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1))
    assert m["macro_f1"] == pytest.approx(1.0)  # over Drama and Comedy, both perfect
    # Samples F1: 1, 1, 1, and 0 for the poster with no genre but a Horror prediction.
    assert m["samples_f1"] == pytest.approx(3 / 4)
    # Baseline: always the two most frequent training genres (Drama + Comedy):
    # TP 4, FP 4 -> micro F1 = 8 / 12.
    assert m["baselines"]["top2_genres"]["genres"] == ["Drama", "Comedy"]
    assert m["baselines"]["top2_genres"]["micro_f1"] == pytest.approx(8 / 12)
    # A constant score's AP is the genre's prevalence: Drama 2/4, Comedy 2/4.
    assert m["baselines"]["frequency_score"]["map"] == pytest.approx(0.5)


def test_calibration_error_by_hand():
    from postergenre.evaluation.metrics import calibration

    # two bins: 0.2 stated, 1 of 4 came true (0.25); 0.9 stated, 2 of 4 came true (0.5)
    confidence = np.array([0.2, 0.2, 0.2, 0.2, 0.9, 0.9, 0.9, 0.9])
    outcome = np.array([1, 0, 0, 0, 1, 1, 0, 0])
    result = calibration(confidence, outcome)
    assert result["ece"] == pytest.approx(0.5 * 0.05 + 0.5 * 0.4)
    assert [b["count"] for b in result["bins"]] == [4, 4]
    assert result["bins"][1]["frequency"] == pytest.approx(0.5)
    assert calibration(np.array([]), np.array([]))["ece"] is None


def test_a_calibrated_model_has_a_small_ece_and_an_overconfident_one_a_large_one():
    from postergenre.evaluation.metrics import calibration

    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    truthful = rng.uniform(size=p.size) < p
    assert calibration(p, truthful)["ece"] < 0.01
    overconfident = np.clip((p - 0.5) * 2 + 0.5, 0, 1)  # pushed towards 0 and 1
    assert calibration(overconfident, truthful)["ece"] > 0.1


def test_ece_in_single_and_multi_label_metrics():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    single = single_label_metrics(np.array([0, 1, 1, 0]), probs, ["A", "B"])
    # top probabilities 0.9, 0.8, 0.7, 0.6; right, wrong, right, right
    expected = (abs(0.9 - 1) + abs(0.8 - 0) + abs(0.7 - 1) + abs(0.6 - 1)) / 4
    assert single["ece"] == pytest.approx(expected)
    y = np.array([[1, 0], [0, 1], [0, 1], [1, 0]])
    multi = multi_label_metrics(y, probs, ["A", "B"], np.array([0.5, 0.5]))
    assert 0 <= multi["ece"] <= 1
    assert sum(b["count"] for b in multi["calibration_bins"]) == probs.size


def test_inverted_share_counts_posters_with_a_predicted_genre_below_a_non_predicted_one():
    from postergenre.evaluation.metrics import inverted_share, multi_label_metrics

    probs = np.array([[0.9, 0.2, 0.1], [0.3, 0.6, 0.1], [0.5, 0.5, 0.5]])
    per_genre = probs >= np.array([0.5, 0.7, 0.05])
    # rows 0 and 1 predict 0.1 and leave out 0.2 / 0.6; row 2's ties are not inversions
    assert inverted_share(probs, per_genre) == pytest.approx(2 / 3)
    assert inverted_share(probs, np.zeros_like(per_genre)) == 0.0
    assert inverted_share(probs, probs >= 0.25) == 0.0
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    metrics = multi_label_metrics(y, probs, ["a", "b", "c"], np.full(3, 0.25))
    assert metrics["genres_per_poster"] == {"predicted": pytest.approx(2.0), "true": 4 / 3}
    assert metrics["inverted_share"] == 0.0
