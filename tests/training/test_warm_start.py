"""Fitting a linear probe toward a prior head (`training.warm_start`)."""

from __future__ import annotations

import numpy as np
import pytest

from postergenre.training.probe import fit_classifier, linear_weights
from postergenre.training.warm_start import balanced_weights, fit_toward_prior


def _data(task: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 16))
    if task == "multi":
        y = (x @ rng.normal(size=(3, 16)).T + rng.normal(size=(400, 3)) > 1).astype(np.float32)
    else:
        y = (x @ rng.normal(size=(3, 16)).T).argmax(axis=1)
    return x, y


@pytest.mark.parametrize("task", ["multi", "single"])
@pytest.mark.parametrize("c", [0.001, 0.1])
def test_a_zero_prior_gives_scikit_learns_class_balanced_head(task, c):
    x, y = _data(task)
    expected_w, expected_b = linear_weights(fit_classifier(x, y, task, c, True, 5000), task, 3, 16)

    weight, bias = fit_toward_prior(x, y, np.zeros((3, 16)), np.zeros(3), c, task)

    np.testing.assert_allclose(weight, expected_w, atol=2e-3)
    np.testing.assert_allclose(bias, expected_b, atol=2e-3)


def test_a_small_c_keeps_the_prior_and_a_large_one_leaves_it():
    x, y = _data("multi")
    prior = np.random.default_rng(1).normal(size=(3, 16))

    near, _ = fit_toward_prior(x, y, prior, np.zeros(3), 1e-6, "multi")
    far, _ = fit_toward_prior(x, y, prior, np.zeros(3), 10.0, "multi")

    assert np.abs(near - prior).max() < 0.01
    assert np.abs(far - prior).max() > 1.0


def test_balanced_weights_weigh_each_class_of_a_genre_equally():
    y = np.array([[1, 0], [0, 0], [0, 0], [0, 0]], dtype=np.float32)

    weights = balanced_weights(y, "multi", 2)

    positives = (weights * y).sum(axis=0)
    negatives = (weights * (1 - y)).sum(axis=0)
    assert positives[0] == pytest.approx(negatives[0])
    assert weights[:, 1].tolist() == [1, 1, 1, 1]  # one class only: nothing to balance
