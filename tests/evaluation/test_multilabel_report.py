"""Hamming loss and subset accuracy beside their no-skill baselines, the threshold sweep, the
policies side by side, and the threshold-policy figure: on hand-made labels and scores."""

from __future__ import annotations

import numpy as np
import pytest

from postergenre.evaluation.metrics import (
    exact_and_labelwise,
    multi_label_metrics,
    no_skill_baselines,
    operating_point,
    threshold_sweep,
)
from postergenre.evaluation.thresholds import (
    count_matched_threshold,
    threshold_policies,
    tune_thresholds,
)

GENRES = ["Action", "Comedy", "Drama"]
# 4 posters x 3 genres, worked by hand below.
Y = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 0, 1]])
P = np.array([[0.9, 0.2, 0.6], [0.1, 0.7, 0.4], [0.3, 0.1, 0.8], [0.4, 0.3, 0.7]])


def test_hamming_loss_and_subset_accuracy_by_hand():
    predicted = P >= 0.5  # [[1,0,1],[0,1,0],[0,0,1],[0,0,1]]: one wrong cell, poster 4
    point = exact_and_labelwise(Y, predicted)
    assert point["hamming_loss"] == pytest.approx(1 / 12)
    assert point["subset_accuracy"] == pytest.approx(3 / 4)


def test_the_no_skill_baselines_by_hand():
    base = no_skill_baselines(Y, GENRES)
    # no genre: every positive cell is wrong (6 of 12), no poster is exactly right
    assert base["no_genre"] == {"hamming_loss": pytest.approx(0.5), "subset_accuracy": 0.0}
    # the most common set is Action + Drama (posters 1 and 4)
    common = base["most_common_set"]
    assert common["genres"] == ["Action", "Drama"]
    assert common["subset_accuracy"] == pytest.approx(2 / 4)
    assert common["hamming_loss"] == pytest.approx(4 / 12)  # poster 2: 3 cells, poster 3: 1


def test_sparse_labels_make_predicting_nothing_look_good():
    """On 20 genres with 2.4 per poster (the shared set's density), answering nothing has a
    Hamming loss of 0.12: label-wise accuracy 0.88 with no skill at all."""
    rng = np.random.default_rng(0)
    y = (rng.random((2000, 20)) < 0.12).astype(int)
    base = no_skill_baselines(y, [f"g{j}" for j in range(20)])["no_genre"]
    assert base["hamming_loss"] == pytest.approx(y.mean())
    assert 0.11 < base["hamming_loss"] < 0.13


def test_the_metrics_carry_hamming_subset_and_the_baselines():
    m = multi_label_metrics(Y, P, GENRES, np.full(3, 0.5), np.array([0.5, 0.25, 0.75]))
    assert m["hamming_loss"] == pytest.approx(1 / 12) and m["subset_accuracy"] == 0.75
    assert m["at_0.5"]["hamming_loss"] == pytest.approx(1 / 12)
    assert m["baselines"]["no_genre"]["hamming_loss"] == pytest.approx(0.5)
    assert m["baselines"]["most_common_set"]["genres"] == ["Action", "Drama"]
    top2 = m["baselines"]["top2_genres"]  # Drama + Action for every poster
    assert top2["genres"] == ["Drama", "Action"] and top2["subset_accuracy"] == 0.5


def test_the_sweep_by_hand():
    rows = {row["threshold"]: row for row in threshold_sweep(Y, P, (0.5, 0.95))}
    assert rows[0.5]["genres_per_poster"] == pytest.approx(5 / 4)
    assert rows[0.5]["micro_f1"] == pytest.approx(2 * 5 / (5 + 6))  # 5 hits, 5 + 6 marks
    # macro: Action 2/3, Comedy 1, Drama 1
    assert rows[0.5]["macro_f1"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert rows[0.5]["hamming_loss"] == pytest.approx(1 / 12)
    assert rows[0.95] == {"threshold": 0.95, "micro_f1": 0.0, "macro_f1": 0.0,
                          "genres_per_poster": 0.0, "hamming_loss": 0.5}  # fmt: skip


def test_the_default_sweep_trades_genres_for_macro_f1_monotonically():
    rng = np.random.default_rng(1)
    y = (rng.random((300, 6)) < 0.2).astype(int)
    p = np.clip(0.25 * y + rng.random((300, 6)) * 0.75, 0, 1)
    rows = threshold_sweep(y, p)
    assert [r["threshold"] for r in rows] == pytest.approx(np.arange(0.05, 0.951, 0.05))
    counts = [r["genres_per_poster"] for r in rows]
    assert counts == sorted(counts, reverse=True) and counts[0] > y.sum(1).mean() > counts[-1]


def test_an_operating_point_is_what_the_metrics_report_at_those_thresholds():
    thresholds = np.array([0.35, 0.5, 0.65])
    point = operating_point(Y, P, thresholds)
    m = multi_label_metrics(Y, P, GENRES, thresholds)
    for key in ("micro_f1", "macro_f1", "samples_f1", "hamming_loss", "subset_accuracy"):
        assert point[key] == pytest.approx(m[key])
    assert point["genres_per_poster"] == pytest.approx(m["genres_per_poster"]["predicted"])


def test_the_policies_are_the_training_rules():
    rng = np.random.default_rng(2)
    y = (rng.random((400, 5)) < 0.3).astype(int)
    p = np.clip(0.3 * y + rng.random((400, 5)) * 0.7, 0, 1)
    policies = threshold_policies(y, p)
    assert set(policies) == {"shared", "per-genre"}
    assert np.all(policies["shared"] == count_matched_threshold(y, p))
    assert np.array_equal(policies["per-genre"], tune_thresholds(y, p))


def _records(tmp_path, y):
    from postergenre.data.records import PosterRecord

    return [
        PosterRecord(f"p{i}", tmp_path / f"p{i}.jpg",
                     tuple(g for g, on in zip(GENRES, row, strict=True) if on))
        for i, row in enumerate(y)
    ]  # fmt: skip


def test_evaluate_reports_every_policy_and_writes_the_figure(tmp_path):
    from postergenre.evaluation.report import evaluate_records, format_multi_label
    from tests.conftest import make_card

    rng = np.random.default_rng(3)
    y = (rng.random((120, 3)) < 0.4).astype(int)
    y[0] = 1  # every genre has a positive
    p = np.clip(0.3 * y + rng.random((120, 3)) * 0.7, 0, 1)
    per_genre = (0.2, 0.4, 0.6)
    card = make_card("seed-cnn", GENRES, task="multi",
                     threshold_policies={"shared": (0.3,) * 3, "per-genre": per_genre})  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    m = evaluate_records(_records(tmp_path, y), p, card, np.array(per_genre),
                         plots_dir=out, policy="per-genre")  # fmt: skip
    assert m["threshold_policy"] == "per-genre"
    assert [row["threshold"] for row in m["per_genre"].values()] == list(per_genre)
    assert list(m["threshold_policies"]) == ["card", "shared", "per-genre"]
    for policy, thresholds in (("card", 0.5), ("shared", 0.3), ("per-genre", per_genre)):
        assert m["threshold_policies"][policy] == operating_point(y, p, thresholds)
    assert m["threshold_policies"]["per-genre"]["micro_f1"] == pytest.approx(m["micro_f1"])
    assert len(m["threshold_sweep"]) == 19
    assert m["threshold_plot"] == "threshold_policy.png"
    assert (out / "threshold_policy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in out.iterdir() if f.suffix not in (".png", ".json")]  # no temporaries
    text = format_multi_label(m)
    assert "model, per-genre thresholds" in text and "baseline: no genre" in text
    assert "per-genre (in use)" in text and "predicting no genre at all already scores" in text
    hamming = m["baselines"]["no_genre"]["hamming_loss"]
    assert f"{1 - hamming:.3f}" in text and hamming == pytest.approx(y.mean())


def test_a_failed_figure_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from postergenre.evaluation.plots import plot_threshold_policy

    def half_written(self, target, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"\x89PNG")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_written)
    sweep = threshold_sweep(Y, P)
    point = operating_point(Y, P, 0.5)
    with pytest.raises(OSError, match="disk full"):
        plot_threshold_policy(sweep, 1.5, {"card": point}, tmp_path / "threshold_policy.png")
    assert list(tmp_path.iterdir()) == []
