"""A scored collection: filters, sorts, search and paging agree with a plain Python reading of
the same rows; corrections update only their own row; opening resolves folders or refuses."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from postergenre.curation.collection import (
    Collection,
    NotAvailable,
    NotIndexed,
    UnknownGenre,
    open_collection,
    resolve_collection,
)
from postergenre.curation.corrections import Corrections
from postergenre.curation.scores import Scores
from postergenre.errors import UserError
from tests.curation.conftest import GENRES, synthetic_index


def _collection(tmp_path, n=40, labelled=True, writable=True) -> Collection:
    index = synthetic_index(tmp_path, n=n, labelled=labelled)
    corrections = Corrections(tmp_path, index.items, writable=writable)
    return Collection(index, tmp_path, Scores.of_index(index), corrections)


def _all(collection: Collection, **filters) -> list[int]:
    total, positions = collection.query(limit=10_000, **filters)
    assert total == len(positions)
    return positions


def test_confidence_sort_and_probability_range(tmp_path):
    c = _collection(tmp_path)
    probs = c.index.probabilities
    top = probs.max(axis=1)
    assert _all(c) == sorted(range(40), key=lambda i: (-top[i], i))
    kept = _all(c, min_p=0.6, max_p=0.9)
    assert kept == [i for i in _all(c) if 0.6 <= top[i] <= 0.9] and kept
    # With a genre: that genre's probability orders and filters (any case).
    drama = probs[:, GENRES.index("Drama")]
    assert _all(c, genre="drama", min_p=0.5) == sorted(
        (i for i in range(40) if drama[i] >= 0.5), key=lambda i: (-drama[i], i)
    )


def test_uncertain_sort_puts_decisions_nearest_a_threshold_first(tmp_path):
    c = _collection(tmp_path)
    nearest = np.abs(c.index.probabilities - 0.5).min(axis=1)
    assert _all(c, sort="uncertain") == sorted(range(40), key=lambda i: (nearest[i], i))
    comedy = np.abs(c.index.probabilities[:, 1] - 0.5)
    assert _all(c, sort="uncertain", genre="Comedy") == sorted(
        range(40), key=lambda i: (comedy[i], i)
    )


def test_single_label_uncertainty_is_the_gap_to_the_runner_up(tmp_path):
    index = synthetic_index(tmp_path, n=10)
    probs = np.array([[0.5, 0.3, 0.2, 0.0]] * 10, dtype=np.float32)
    probs[3] = [0.4, 0.39, 0.21, 0.0]
    scores = Scores(probs, list(GENRES), np.full(4, 0.5), "m", task="single")
    c = Collection(index, tmp_path, scores, Corrections(tmp_path, index.items))
    assert _all(c, sort="uncertain")[0] == 3
    assert c.predicted(3) == ["Action"]  # single-label: the top genre only


def test_search_matches_title_or_file_name_in_any_case(tmp_path):
    c = _collection(tmp_path)
    assert _all(c, q="movie 01", sort="name") == [11, 12, 13, 14, 16, 17, 18, 19]
    assert _all(c, q="P010.JPG") == [10]  # item 10 has no title: found by its file name
    assert c.tile(10)["name"] == "p010.jpg"
    assert _all(c, q="no such poster") == []


def test_name_sort_and_paging(tmp_path):
    c = _collection(tmp_path)
    names = [c.tile(i)["name"].casefold() for i in range(40)]
    by_name = sorted(range(40), key=lambda i: (names[i], i))
    assert _all(c, sort="name") == by_name
    total, page = c.query(sort="name", offset=30, limit=8)
    assert total == 40 and page == by_name[30:38]
    assert c.query(sort="name", offset=40, limit=8) == (40, [])


def test_reviewed_filter_follows_corrections(tmp_path):
    c = _collection(tmp_path)
    c.correct(5, ["drama", "HORROR"])
    detail = c.accept(7)
    assert _all(c, reviewed=True) == [i for i in _all(c) if i in (5, 7)]
    assert len(_all(c, reviewed=False)) == 38
    assert c.tile(5)["corrected"] == ["Drama", "Horror"]  # the model's spelling
    assert detail["corrected"] == c.predicted(7) and detail["reviewed"]
    assert detail["reviewed_at"].endswith("Z")


def test_tiles_and_details(tmp_path):
    c = _collection(tmp_path)
    probs = c.index.probabilities[3]
    tile = c.tile(3)
    order = np.argsort(-probs)
    assert tile["genres_top"] == [[GENRES[j], round(float(probs[j]), 6)] for j in order[:3]]
    assert tile["given"] == ["Horror", "Action"] and tile["corrected"] is None
    detail = c.detail(3)
    assert [p["genre"] for p in detail["probabilities"]] == [GENRES[j] for j in order]
    assert detail["predicted"] == [GENRES[j] for j in order if probs[j] >= 0.5]
    assert detail["suggested"] is None and detail["label_quality"] is None
    unlabelled = _collection(tmp_path / "u", labelled=False)
    assert unlabelled.tile(3)["given"] is None


def test_unknown_genres_and_sorts_are_refused(tmp_path):
    c = _collection(tmp_path)
    with pytest.raises(UnknownGenre, match="unknown genre 'Western'; the model knows: Action"):
        c.correct(1, ["Drama", "Western"])
    assert c.corrections.get(1) is None and not c.reviewed[1]
    with pytest.raises(UnknownGenre):
        c.query(genre="Western")
    with pytest.raises(UserError, match="unknown sort"):
        c.query(sort="random")


def test_mislabelled_sort_needs_label_issues(tmp_path):
    c = _collection(tmp_path, n=6)
    with pytest.raises(NotAvailable, match="not available yet"):
        c.query(sort="mislabelled")
    quality = np.array([0.9, 0.1, np.nan, 0.5, 0.05, 0.7])
    issues = SimpleNamespace(quality=quality, suggested=lambda i: ["Comedy"])
    c.set_label_issues(issues)
    assert _all(c, sort="mislabelled") == [4, 1, 3, 5, 0, 2]  # NaN (no labels) last
    assert c.detail(1)["suggested"] == ["Comedy"] and c.detail(1)["label_quality"] == 0.1
    assert c.detail(2)["label_quality"] is None


def test_new_scores_replace_every_derived_array(tmp_path):
    c = _collection(tmp_path, n=10)
    flipped = 1 - c.index.probabilities
    c.set_scores(Scores(flipped, list(GENRES), np.full(4, 0.5), "retrained"))
    assert c.scores.model == "retrained" and c.view.current
    top = flipped.max(axis=1)
    assert _all(c) == sorted(range(10), key=lambda i: (-top[i], i))
    with pytest.raises(ValueError, match="one row per poster"):
        c.set_scores(Scores(flipped[:5], list(GENRES), np.full(4, 0.5), "bad"))


def test_resolve_collection_finds_the_index_or_says_how_to_make_one(tmp_path):
    index = synthetic_index(tmp_path, n=4)
    index.save(tmp_path / "idx")
    assert resolve_collection(tmp_path / "idx") == tmp_path / "idx"
    posters = tmp_path / "posters"
    posters.mkdir()
    with pytest.raises(NotIndexed) as refused:
        resolve_collection(posters)
    line = refused.value.one_line()
    assert line == (
        f"{posters} is not indexed yet; index it first: postergenre index --folder {posters} "
        f"--out {posters}/.postergenre-index"
    )
    index.save(posters / ".postergenre-index")
    assert resolve_collection(posters) == posters / ".postergenre-index"
    with pytest.raises(UserError, match="collection not found"):
        resolve_collection(tmp_path / "missing")


def test_open_collection_reads_back_corrections(tmp_path):
    index = synthetic_index(tmp_path, n=4)
    folder = index.save(tmp_path / "idx")
    predictor = SimpleNamespace(name="other", task="single")
    first = open_collection(folder, predictor)
    assert first.scores.model == "synthetic" and first.scores.task == "multi"
    first.correct(2, ["Comedy"])
    again = open_collection(folder, predictor)
    assert again.tile(2)["corrected"] == ["Comedy"] and _all(again, reviewed=True) == [2]
    read_only = open_collection(folder, predictor, writable=False)
    assert not read_only.corrections.writable


def test_an_index_without_probabilities_needs_a_model_over_its_embeddings(tmp_path):
    index = synthetic_index(tmp_path, n=4)
    index.probabilities = None
    folder = index.save(tmp_path / "idx")
    predictor = SimpleNamespace(name="seed", task="single", card=SimpleNamespace(kind="network"))
    with pytest.raises(UserError, match="holds no genre probabilities and model seed is not"):
        open_collection(folder, predictor)
