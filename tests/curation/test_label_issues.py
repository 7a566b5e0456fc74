"""Likely mislabelled posters: out-of-fold probabilities judged by cleanlab."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from postergenre.cli import main
from postergenre.curation.label_issues import (
    LabelIssues,
    MissingCleanlab,
    find_label_issues,
)
from postergenre.errors import UserError

NAMES = ["Action", "Comedy", "Drama", "Horror"]


def planted(n: int = 600, flips: int = 30, seed: int = 0):
    """Embeddings whose genres are directions in space, labels true but for `flips` posters
    that lost a genre they have or gained one they lack."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, 4)) < np.array([0.3, 0.4, 0.5, 0.2])
    x = truth.astype(float) @ (rng.normal(0, 1, (4, 32)) * 2) + rng.normal(0, 1, (n, 32))
    labels = [[NAMES[j] for j in range(4) if truth[i, j]] for i in range(n)]
    flipped = rng.choice(n, flips, replace=False)
    for i in flipped:
        genre = NAMES[rng.integers(4)]
        given = labels[i]
        labels[i] = [g for g in given if g != genre] if genre in given else [*given, genre]
    return x, labels, flipped


@pytest.fixture(scope="module")
def judged() -> tuple[LabelIssues, np.ndarray, list[list[str]]]:
    x, labels, flipped = planted()
    return find_label_issues(x, labels, np.ones(len(x), bool)), flipped, labels


def test_most_planted_flips_are_flagged_and_few_clean_posters(judged):
    issues, flipped, _ = judged
    clean = np.setdiff1d(np.arange(len(issues.flagged)), flipped)

    assert issues.flagged[flipped].mean() >= 0.6
    assert issues.flagged[clean].mean() <= 0.02
    assert np.nanmean(issues.quality[flipped]) < np.nanmean(issues.quality[clean])
    assert issues.genre_names == ["Drama", "Comedy", "Action", "Horror"]  # most frequent first


def test_suggestions_restore_the_planted_genre_often(judged):
    issues, flipped, labels = judged
    caught = [i for i in flipped if issues.flagged[i]]
    differ = [set(issues.suggested(i)) != set(labels[i]) for i in caught]

    assert np.mean(differ) >= 0.7
    probs = issues.oof_probabilities[caught[0]]
    suggested = issues.suggested(caught[0])
    assert [probs[issues.genre_names.index(g)] for g in suggested] == sorted(
        (probs[issues.genre_names.index(g)] for g in suggested), reverse=True
    )


def test_unlabelled_posters_get_nan_and_are_never_flagged():
    x, labels, _ = planted(200, 10)
    labelled = np.ones(200, bool)
    labelled[:20] = False

    issues = find_label_issues(x, labels, labelled, genre_names=["Action", "Drama"])

    assert issues.oof_probabilities.shape == (200, 2)
    assert np.isnan(issues.oof_probabilities[:20]).all() and np.isnan(issues.quality[:20]).all()
    assert not issues.flagged[:20].any()
    assert issues.suggested(0) == []
    assert np.isfinite(issues.quality[20:]).all()
    assert ((issues.quality[20:] >= 0) & (issues.quality[20:] <= 1)).all()
    assert set(issues.ranked()) == set(range(20, 200))


def test_too_few_labelled_posters_or_a_too_rare_genre_is_refused():
    x, labels, _ = planted(40, 0)
    with pytest.raises(UserError, match=r"9 labelled posters: .* at least 10"):
        find_label_issues(x[:9], labels[:9], np.ones(9, bool))
    labels = [["Action"]] * 38 + [["Western"], ["Action", "Western"]]
    with pytest.raises(UserError, match=r"too few labelled posters for Western \(2\)"):
        find_label_issues(x, labels, np.ones(40, bool), genre_names=["Action", "Western"])


def test_without_cleanlab_one_line_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cleanlab.multilabel_classification", None)
    x, labels, _ = planted(40, 0)

    with pytest.raises(MissingCleanlab) as error:
        find_label_issues(x, labels, np.ones(40, bool))

    assert error.value.one_line() == (
        "finding label issues needs cleanlab; pip install 'postergenre[label-issues]'"
    )


def _flipped_labels(tiny_posters: Path, out: Path) -> tuple[Path, dict[str, str]]:
    """A label file over the tiny posters (genre = colour) with two labels swapped; returns
    it and {id: true genre} of the swapped ones."""
    rows, swapped = [], {}
    for i, path in enumerate(sorted(tiny_posters.rglob("*.png"))):
        genre = path.parent.name
        if i in (3, 30):
            swapped[f"p{i}"] = genre
            genre = "Drama" if genre != "Drama" else "Action"
        rows.append({"id": f"p{i}", "path": str(path), "genres": genre})
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "path", "genres"])
        writer.writeheader()
        writer.writerows(rows)
    return out, swapped


def test_the_command_lists_the_swapped_posters_and_writes_a_csv(tiny_posters, tmp_path, capsys):
    labels, swapped = _flipped_labels(tiny_posters, tmp_path / "labels.csv")
    table = tmp_path / "issues.csv"

    code = main(["label-issues", "--labels", str(labels), "--folds", "4", "--json",
                 "--csv", str(table)])  # fmt: skip

    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    flagged = {row["id"] for row in summary["issues"]}
    assert flagged & set(swapped) and len(flagged) <= 4
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == summary["judged"] == 48
    assert list(rows[0]) == ["id", "path", "quality", "flagged", "given", "suggested"]
    assert {r["id"] for r in rows[: len(flagged)]} == flagged  # flagged first
    # The swapped posters have the least credible labels, and the probe knows their colour.
    lowest = sorted(rows, key=lambda r: float(r["quality"]))[:2]
    assert {r["id"]: r["suggested"] for r in lowest} == swapped


def test_the_command_refuses_an_empty_split_in_one_line(tiny_posters, tmp_path, capsys):
    labels, _ = _flipped_labels(tiny_posters, tmp_path / "labels.csv")

    code = main(["label-issues", "--labels", str(labels), "--split", "test"])

    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "postergenre label-issues: error: no posters in split 'test'"
    )
