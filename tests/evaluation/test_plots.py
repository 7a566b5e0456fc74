"""Per-genre average precision with bootstrap intervals, and the figures drawn from it: a sorted
bar chart and one small precision-recall panel per genre, written whole."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from postergenre.evaluation.metrics import (
    average_precision_intervals,
    weighted_average_precision,
)
from postergenre.evaluation.plots import plot_precision_figures


def _scores(n: int = 300, genres: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of growing skill per genre, rounded so that scores tie."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, genres)) < np.linspace(0.05, 0.5, genres)).astype(int)
    skill = np.linspace(0.0, 0.4, genres)
    return y, np.round(rng.random((n, genres)) * (1 - skill) + skill * y, 2)


def test_weighted_ap_is_scikit_learns_ties_and_weights_included():
    y, scores = _scores()
    weights = np.random.default_rng(1).integers(0, 3, len(y)).astype(float)
    for j in range(y.shape[1]):
        ones = weighted_average_precision(y[:, j], scores[:, j], np.ones((1, len(y))))[0]
        assert ones == pytest.approx(average_precision_score(y[:, j], scores[:, j]), abs=1e-12)
        got = weighted_average_precision(y[:, j], scores[:, j], weights[None])[0]
        want = average_precision_score(y[:, j], scores[:, j], sample_weight=weights)
        assert got == pytest.approx(want, abs=1e-12)
    no_positive = weighted_average_precision(np.zeros(4), np.arange(4.0), np.ones((1, 4)))
    assert np.isnan(no_positive[0])


def test_intervals_hold_the_ap_are_seeded_and_sorted():
    y, scores = _scores()
    y[:, 0] = 0  # a genre without positives has no AP and no row
    genres = [f"g{j}" for j in range(y.shape[1])]
    rows = average_precision_intervals(y, scores, genres, n_resamples=200, seed=0)
    assert sorted(row["genre"] for row in rows) == genres[1:]
    assert [r["ap"] for r in rows] == sorted((r["ap"] for r in rows), reverse=True)
    for row in rows:
        j = genres.index(row["genre"])
        assert row["ap"] == pytest.approx(average_precision_score(y[:, j], scores[:, j]))
        assert 0 <= row["lower"] <= row["ap"] <= row["upper"] <= 1
        assert row["upper"] - row["lower"] > 0.01  # 300 posters: never a point
        assert row["prevalence"] == pytest.approx(y[:, j].mean())
        assert row["support"] == y[:, j].sum()
    assert rows == average_precision_intervals(y, scores, genres, n_resamples=200, seed=0)
    other = average_precision_intervals(y, scores, genres, n_resamples=200, seed=1)
    assert [r["lower"] for r in rows] != [r["lower"] for r in other]


def test_more_posters_narrow_the_intervals():
    small, large = _scores(150), _scores(2400)
    width = [
        np.mean(
            [r["upper"] - r["lower"] for r in average_precision_intervals(y, p, list("abcdef"))]
        )
        for y, p in (small, large)
    ]
    assert width[1] < width[0] / 2


def test_both_figures_are_written_whole(tmp_path):
    y, scores = _scores()
    genres = [f"g{j}" for j in range(y.shape[1])]
    rows = plot_precision_figures(y, scores, genres, tmp_path / "pr.png", tmp_path / "ap.png", "t")
    assert len(rows) == len(genres)
    for name in ("pr.png", "ap.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ap.png", "pr.png"]  # no temporaries


def test_evaluate_writes_the_figures_and_the_intervals(tmp_path):
    from postergenre.data.records import PosterRecord
    from postergenre.evaluation.report import evaluate_records
    from tests.conftest import make_card

    y, scores = _scores(120, 3)
    genres = ("Action", "Comedy", "Drama")
    records = [
        PosterRecord(
            f"p{i}",
            tmp_path / f"p{i}.jpg",
            tuple(g for g, on in zip(genres, row, strict=True) if on),
        )
        for i, row in enumerate(y)
    ]
    card = make_card("seed-cnn", genres, task="multi")
    metrics = evaluate_records(records, scores, card, np.full(3, 0.5), plots_dir=tmp_path)
    assert metrics["plot"] == "pr_curves.png" and metrics["ap_plot"] == "ap_by_genre.png"
    assert (tmp_path / "pr_curves.png").is_file() and (tmp_path / "ap_by_genre.png").is_file()
    for genre, (lower, upper) in metrics["ap_intervals"].items():
        assert lower <= metrics["per_genre"][genre]["ap"] <= upper
