"""Likely mislabelled posters: out-of-fold probabilities of a linear probe on frozen
embeddings, judged by cleanlab's confident learning (multi-label).

Every labelled poster gets probabilities from a probe that never saw it (k-fold cross-
validation, one L2-regularised logistic regression per genre, all genres fitted at once by
`training.warm_start`: seconds for 5,000 x 1,280). cleanlab compares them with the given
labels: `flagged` is its verdict that a poster's labels are wrong (some genre given that the
poster does not look like, or missing one it does), `quality` its label quality score in
[0, 1] (low: likely mislabelled). cleanlab is an extra: `pip install 'postergenre[label-issues]'`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from postergenre.console import progress as progress_bar
from postergenre.console import report_skipped
from postergenre.data.records import PosterRecord
from postergenre.errors import UserError
from postergenre.evaluation.thresholds import count_matched_threshold

# The probe's regularisation on standardised embeddings: on the shared training split its
# out-of-fold mAP is within 0.003 of the best C's (0.001) and it flags fewer posters
# (BENCHMARKS.md); the probabilities, not a decision, matter here.
PROBE_C = 0.0003


class MissingCleanlab(UserError):
    """cleanlab (an optional dependency) is not installed."""

    hint = "pip install 'postergenre[label-issues]'"


@dataclass
class LabelIssues:
    """What `find_label_issues` found, one row per poster (in the order given)."""

    genre_names: list[str]
    oof_probabilities: np.ndarray  # (n, G) out-of-fold probabilities (NaN rows for unlabelled)
    quality: np.ndarray  # (n,) label quality in [0, 1], low = likely mislabelled; NaN if unlabelled
    flagged: np.ndarray  # (n,) bool: cleanlab's verdict that the given labels are wrong
    threshold: float = 0.5  # out-of-fold probabilities at or above it are `suggested`

    def suggested(self, i: int) -> list[str]:
        """The genres the out-of-fold model predicts for poster `i`, most probable first."""
        probs = self.oof_probabilities[i]
        if np.isnan(probs).any():
            return []
        order = np.argsort(-probs, kind="stable")
        return [self.genre_names[j] for j in order if probs[j] >= self.threshold]

    def ranked(self) -> np.ndarray:
        """Labelled posters' indices, flagged ones first, each part by rising quality."""
        labelled = np.flatnonzero(~np.isnan(self.quality))
        order = np.lexsort((self.quality[labelled], ~self.flagged[labelled]))
        return labelled[order]


def _vocabulary(
    labels: Sequence[Sequence[str]], genre_names: Sequence[str] | None, folds: int
) -> list[str]:
    """The genres judged: those named (each must be given to >= `folds` posters), else every
    genre given to at least `folds` posters, most frequent first."""
    counts = Counter(g for genres in labels for g in dict.fromkeys(genres))
    if genre_names is None:
        return [g for g, n in counts.most_common() if n >= folds]
    rare = [f"{g} ({counts.get(g, 0)})" for g in genre_names if counts.get(g, 0) < folds]
    if rare:
        raise UserError(
            f"too few labelled posters for {', '.join(rare)}: each genre needs at least "
            f"{folds}, one per fold"
        )
    return list(dict.fromkeys(genre_names))


def out_of_fold_probabilities(
    x: np.ndarray,
    y: np.ndarray,
    folds: int,
    seed: int,
    progress: bool = False,
    c: float = PROBE_C,
) -> np.ndarray:
    """(n, G) probabilities of each row from a probe (regularisation `c`) fitted on the other
    folds."""
    import torch

    from postergenre.training.warm_start import fit_toward_prior

    order = np.random.default_rng(seed).permutation(len(x))
    probs = np.zeros(y.shape, dtype=np.float64)
    zeros_w, zeros_b = np.zeros((y.shape[1], x.shape[1])), np.zeros(y.shape[1])
    with progress_bar(folds, "cross-validating", "fold", enabled=progress) as bar:
        for held in np.array_split(order, folds):
            fit = np.setdiff1d(order, held)
            mean, std = x[fit].mean(axis=0), x[fit].std(axis=0) + 1e-6
            weight, bias = fit_toward_prior(
                (x[fit] - mean) / std, y[fit], zeros_w, zeros_b, c, "multi", balanced=False
            )
            logits = ((x[held] - mean) / std) @ weight.T + bias
            probs[held] = torch.from_numpy(np.asarray(logits, np.float64)).sigmoid().numpy()
            bar.update(1)
    return probs


def find_label_issues(
    vectors: np.ndarray,
    labels: Sequence[Sequence[str]],
    labelled: Sequence[bool] | np.ndarray,
    genre_names: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    progress: bool = False,
) -> LabelIssues:
    """Judge the given `labels` (genre names per poster) of the posters whose embeddings are
    `vectors` (n, D); posters not `labelled` get NaN and are never flagged. `genre_names`: the
    genres judged (default: every genre given to at least `folds` posters)."""
    try:
        from cleanlab.multilabel_classification import filter as cl_filter
        from cleanlab.multilabel_classification import rank as cl_rank
    except ImportError:
        raise MissingCleanlab("finding label issues needs cleanlab") from None
    vectors = np.asarray(vectors, dtype=np.float32)
    mask = np.asarray(labelled, dtype=bool)
    if len(vectors) != len(labels) or len(mask) != len(labels):
        raise ValueError("vectors, labels and labelled must have one entry per poster")
    if folds < 2:
        raise UserError(f"need at least 2 folds, got {folds}")
    rows = np.flatnonzero(mask)
    if len(rows) < 2 * folds:
        raise UserError(
            f"{len(rows)} labelled posters: finding label issues needs at least {2 * folds} "
            f"(2 per fold)"
        )
    names = _vocabulary([labels[i] for i in rows], genre_names, folds)
    if len(names) < 2:
        raise UserError(f"need at least 2 genres given to >= {folds} posters each")
    index = {g: j for j, g in enumerate(names)}
    given = [sorted({index[g] for g in labels[i] if g in index}) for i in rows]
    y = np.zeros((len(rows), len(names)), dtype=np.float32)
    for r, genres in enumerate(given):
        y[r, genres] = 1.0
    probs = out_of_fold_probabilities(vectors[rows], y, folds, seed, progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flagged = cl_filter.find_label_issues(given, probs, n_jobs=1)
        quality = cl_rank.get_label_quality_scores(given, probs)
    n = len(labels)
    oof = np.full((n, len(names)), np.nan)
    oof[rows] = probs
    scores = np.full(n, np.nan)
    scores[rows] = quality
    verdict = np.zeros(n, dtype=bool)
    verdict[rows] = flagged
    return LabelIssues(names, oof, scores, verdict, count_matched_threshold(y, probs))


def label_issues_of(
    records: Sequence[PosterRecord],
    arch: str = "efficientnet-lite0",
    genre_names: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> tuple[list[PosterRecord], LabelIssues]:
    """`postergenre label-issues` as one call: embed the posters (cached) and judge their
    labels; returns the readable records (unreadable ones reported and left out) and the
    verdict, row for row. Every record counts as labelled (no genre is a label, too)."""
    from postergenre.models.embeddings import compute_embeddings

    arrays = compute_embeddings(arch, [r.path for r in records], cache_dir, progress)
    report_skipped(arrays.errors)
    kept = [records[i] for i in arrays.ok]
    vectors = arrays[arrays.ok]
    issues = find_label_issues(
        vectors, [r.genres for r in kept], np.ones(len(kept), bool), genre_names, folds, seed,
        progress,
    )  # fmt: skip
    return kept, issues
