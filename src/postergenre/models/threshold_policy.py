"""Which thresholds a multi-label model predicts with: the one owner of that choice.

A multi-label card stores the thresholds it was built with (`thresholds`, the `card` policy)
and, when the training run recorded them, the alternatives, all chosen on the validation split
(never on test) in `threshold_policies`:

- `shared`: one threshold for every genre, the best micro F1 among those that predict about as
  many genres per poster as the labels carry (a predicted genre is never less probable than a
  left-out one);
- `per-genre`: each genre's own F1-best threshold (a higher macro F1, paid for with more
  genres per poster and rare genres predicted often).

`apply_threshold_policy` turns a card into one whose `thresholds` are the policy's, so every
later step (`ModelCard.decide`, reports, the web page) follows without knowing about policies.
"""

from __future__ import annotations

from typing import Any

from postergenre.errors import UserError

THRESHOLD_POLICIES = ("card", "shared", "per-genre")
DEFAULT_POLICY = "card"
# The policies a card may record beside its own thresholds.
RECORDED_POLICIES = THRESHOLD_POLICIES[1:]


class ThresholdPolicyError(UserError):
    """A threshold policy the model cannot follow."""


def read_threshold_policies(
    fields: Any, task: str, genres: tuple[str, ...]
) -> dict[str, tuple[float, ...]]:
    """The card's optional `threshold_policies` ({policy: {genre: threshold}}), checked with
    `fields` (a `CardFields`): a multi-label model's, known policies, every genre, numbers in
    [0, 1]."""
    section = fields.mapping("threshold_policies", None)
    if section and task != "multi":
        fields.fail("threshold_policies", "must be absent for a single-label model")
    policies: dict[str, tuple[float, ...]] = {}
    for policy, values in (section or {}).items():
        name = f"threshold_policies.{policy}"
        if policy not in RECORDED_POLICIES:
            fields.fail(name, f"is not one of {', '.join(RECORDED_POLICIES)}")
        if not isinstance(values, dict) or sorted(values) != sorted(genres):
            fields.fail(name, "must map every genre of the model, and only those, to a threshold")
        policies[policy] = tuple(fields.number(f"{name}.{g}", values[g], 0.0, 1.0) for g in genres)
    return policies


def policy_thresholds(card: Any, policy: str) -> tuple[float, ...]:
    """The thresholds of `policy` for a multi-label `card`, or a one-line refusal."""
    if policy not in THRESHOLD_POLICIES:
        raise ThresholdPolicyError(
            f"unknown threshold policy {policy!r}: choose one of {', '.join(THRESHOLD_POLICIES)}"
        )
    if card.task != "multi":
        raise ThresholdPolicyError(
            f"model {card.name or card.architecture} is single-label: it predicts the most "
            "probable genre, so a threshold policy does not apply",
            hint="leave out --threshold-policy",
        )
    if policy == DEFAULT_POLICY:
        return tuple(card.thresholds)
    if policy not in card.threshold_policies:
        raise ThresholdPolicyError(
            f"model {card.name or card.architecture} records no {policy!r} thresholds "
            "(they are chosen on validation posters when a model is trained)",
            hint="retrain it with this version, or use --threshold-policy card",
        )
    return card.threshold_policies[policy]


def apply_threshold_policy(card: Any, policy: str = DEFAULT_POLICY) -> Any:
    """`card` predicting with the thresholds of `policy` (the card itself for `card`; a
    single-label card only takes `card`)."""
    if policy == DEFAULT_POLICY and policy in THRESHOLD_POLICIES:
        return card
    return card.replace(thresholds=policy_thresholds(card, policy))
