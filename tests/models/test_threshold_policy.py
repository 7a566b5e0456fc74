"""Threshold policies on the card: recorded, validated, applied, refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from postergenre.models.card import CardError, ModelCard
from postergenre.models.threshold_policy import (
    THRESHOLD_POLICIES,
    ThresholdPolicyError,
    apply_threshold_policy,
    policy_thresholds,
)
from tests.conftest import make_card

GENRES = ("Action", "Comedy", "Drama")
POLICIES = {"shared": (0.3, 0.3, 0.3), "per-genre": (0.2, 0.4, 0.6)}


def _multi(**fields) -> ModelCard:
    return make_card("seed-cnn", GENRES, task="multi", name="m", **fields)


def test_policies_survive_the_json_round_trip():
    card = _multi(threshold_policies=POLICIES)
    data = card.to_json()
    assert data["threshold_policies"]["per-genre"] == {"Action": 0.2, "Comedy": 0.4, "Drama": 0.6}
    assert ModelCard.from_json(data).threshold_policies == POLICIES
    assert "threshold_policies" not in _multi().to_json()  # older cards stay as they were


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"best": {"Action": 0.1, "Comedy": 0.1, "Drama": 0.1}}, "is not one of"),
        ({"shared": {"Action": 0.1, "Comedy": 0.1}}, "every genre"),
        ({"shared": {"Action": 0.1, "Comedy": 0.1, "Drama": 0.1, "Horror": 0.1}}, "every genre"),
        ({"shared": {"Action": 0.1, "Comedy": 1.5, "Drama": 0.1}}, "between 0 and 1"),
        ({"shared": [0.1, 0.1, 0.1]}, "every genre"),
    ],
)
def test_a_bad_section_is_refused_naming_the_field(section, problem):
    data = _multi().to_json()
    data["threshold_policies"] = section
    with pytest.raises(CardError, match=problem):
        ModelCard.from_json(data)


def test_a_single_label_card_records_no_policies():
    data = make_card("seed-cnn", GENRES).to_json()
    data["threshold_policies"] = {"shared": dict.fromkeys(GENRES, 0.3)}
    with pytest.raises(CardError, match="single-label"):
        ModelCard.from_json(data)


def test_applying_a_policy_changes_the_decisions_and_nothing_else():
    card = _multi(threshold_policies=POLICIES)
    probs = np.array([0.25, 0.35, 0.55])
    assert apply_threshold_policy(card) is card  # the default is the card itself
    assert card.decide(probs).tolist() == [False, False, True]  # 0.5 each
    shared = apply_threshold_policy(card, "shared")
    assert shared.decide(probs).tolist() == [False, True, True]
    per_genre = apply_threshold_policy(card, "per-genre")
    assert per_genre.decide(probs).tolist() == [True, False, False]
    assert per_genre.describe_rule().startswith("every genre at or above its own threshold")
    assert per_genre.replace(thresholds=card.thresholds) == card


def test_missing_unknown_and_single_label_policies_are_refused():
    with pytest.raises(ThresholdPolicyError, match="records no 'per-genre' thresholds") as info:
        policy_thresholds(_multi(), "per-genre")
    assert "--threshold-policy card" in info.value.one_line()
    with pytest.raises(ThresholdPolicyError, match="unknown threshold policy"):
        policy_thresholds(_multi(threshold_policies=POLICIES), "best")
    with pytest.raises(ThresholdPolicyError, match="single-label"):
        apply_threshold_policy(make_card("seed-cnn", GENRES), "shared")
    assert THRESHOLD_POLICIES[0] == "card"
