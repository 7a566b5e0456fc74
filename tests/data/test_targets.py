"""From posters to what a model trains on: the genre vocabulary, targets, and input tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from postergenre.data.preprocess import SYMMETRIC_RANGE, UNIT_RANGE
from postergenre.data.records import PosterCollection, PosterRecord
from postergenre.data.targets import encode_targets, infer_task, resolve_genres
from postergenre.data.transforms import Augmentation, to_model_input
from postergenre.errors import UserError


def poster(poster_id: str, *genres: str, split: str | None = None) -> PosterRecord:
    return PosterRecord(poster_id, Path(f"{poster_id}.jpg"), genres, split)


@pytest.fixture
def collection() -> PosterCollection:
    """Train: Drama 3, Action 2, Comedy 1. Test: Comedy 4 and Horror 1 (never in train)."""
    train = [
        poster("t1", "Drama", split="train"),
        poster("t2", "Drama", "Action", split="train"),
        poster("t3", "Drama", split="train"),
        poster("t4", "Action", split="train"),
        poster("t5", "Comedy", split="train"),
    ]
    test = [poster(f"x{i}", "Comedy", split="test") for i in range(4)]
    return PosterCollection([*train, *test, poster("x9", "Horror", split="test")], "memory")


# --- the genre vocabulary -----------------------------------------------------------------


def test_explicit_genres_are_kept_in_the_given_order(collection):
    assert resolve_genres(collection, ["Horror", "Drama", "Horror"]) == ["Horror", "Drama"]


def test_explicit_unknown_genre_is_a_user_error(collection):
    with pytest.raises(UserError, match="not in the data: Western") as error:
        resolve_genres(collection, ["Drama", "Western"])
    assert "known: Action, Comedy, Drama, Horror" in str(error.value)


def test_derived_genres_come_from_the_train_split_most_frequent_first(collection):
    # Comedy has 5 posters overall but only 1 in train; Horror is never in train.
    assert resolve_genres(collection) == ["Drama", "Action", "Comedy"]
    assert resolve_genres(collection, min_count=2) == ["Drama", "Action"]


def test_without_splits_the_whole_collection_counts():
    unsplit = PosterCollection(
        [poster("a", "Comedy"), poster("b", "Comedy"), poster("c", "Drama")], "memory"
    )

    assert resolve_genres(unsplit, min_count=1) == ["Comedy", "Drama"]


def test_fewer_than_two_genres_is_a_user_error(collection):
    with pytest.raises(UserError, match="at least 2 genres with >= 3 posters; found 1"):
        resolve_genres(collection, min_count=3)


# --- task and targets ---------------------------------------------------------------------


def test_infer_task():
    records = [poster("a", "Drama"), poster("b", "Comedy", "Romance"), poster("c")]

    # Romance is outside this vocabulary, so every poster has at most one genre of it.
    assert infer_task(records, ["Drama", "Comedy"]) == "single"
    assert infer_task(records, ["Drama", "Comedy", "Romance"]) == "multi"


def test_single_label_keeps_posters_with_exactly_one_vocabulary_genre():
    records = [
        poster("a", "Drama"),
        poster("b", "Comedy", "Romance"),  # one genre in the vocabulary: kept as Comedy
        poster("c", "Drama", "Comedy"),  # two: dropped
        poster("d", "Horror"),  # none: dropped
    ]

    targets = encode_targets(records, ["Drama", "Comedy"], "single")

    assert [r.id for r in targets.records] == ["a", "b"]
    assert targets.y.tolist() == [0, 1]
    assert targets.y.dtype == np.int64
    assert targets.dropped == 2


def test_multi_label_is_a_zero_one_matrix_over_every_poster():
    records = [poster("a", "Drama"), poster("b", "Comedy", "Drama"), poster("c", "Horror")]

    targets = encode_targets(records, ["Drama", "Comedy"], "multi")

    assert [r.id for r in targets.records] == ["a", "b", "c"]
    assert targets.y.tolist() == [[1, 0], [1, 1], [0, 0]]
    assert targets.y.dtype == np.float32
    assert targets.dropped == 0


def test_unknown_task_is_a_user_error():
    with pytest.raises(UserError, match="unknown task 'ordinal'"):
        encode_targets([poster("a", "Drama")], ["Drama", "Comedy"], "ordinal")


# --- pixels to model input ----------------------------------------------------------------


@pytest.fixture
def pixels() -> np.ndarray:
    """A batch of two 6 x 4 noisy posters, uint8 (B, H, W, 3) as the cache returns them."""
    return np.random.default_rng(0).integers(0, 256, (2, 6, 4, 3), dtype=np.uint8)


def test_unit_range_input(pixels):
    x = to_model_input(pixels, UNIT_RANGE)

    assert x.shape == (2, 3, 6, 4) and x.dtype == torch.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    # channels first: x[b, c, y, x] is pixels[b, y, x, c] / 255
    assert x[1, 2, 5, 3].item() == pytest.approx(pixels[1, 5, 3, 2] / 255)


def test_symmetric_range_maps_0_and_255_to_about_minus_one_and_one():
    black_and_white = np.array([0, 255], dtype=np.uint8).reshape(1, 1, 2, 1).repeat(3, axis=3)

    x = to_model_input(torch.from_numpy(black_and_white), SYMMETRIC_RANGE)

    assert x[0, :, 0, 0].tolist() == pytest.approx([-127 / 128] * 3)  # about -0.992
    assert x[0, :, 0, 1].tolist() == pytest.approx([1.0] * 3)


def test_augmentation_is_deterministic_for_a_seed(pixels):
    def augmented(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return to_model_input(pixels, UNIT_RANGE, Augmentation(), generator)

    plain = to_model_input(pixels, UNIT_RANGE)
    first, again, other = augmented(7), augmented(7), augmented(8)

    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.allclose(first, plain, atol=1e-3)
    assert first.shape == plain.shape == (2, 3, 6, 4)
    assert first.min() >= 0.0 and first.max() <= 1.0


def test_augmentation_does_not_touch_the_cached_pixels(pixels):
    before = pixels.copy()

    to_model_input(pixels, SYMMETRIC_RANGE, Augmentation(), torch.Generator().manual_seed(0))

    assert np.array_equal(pixels, before)
