"""Evaluate predictions against records whose genre vocabulary may differ from the model's,
and format the result as text tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from postergenre.data.records import PosterRecord
from postergenre.data.targets import infer_task
from postergenre.errors import UserError
from postergenre.evaluation.metrics import (
    multi_label_metrics,
    operating_point,
    single_label_metrics,
    threshold_sweep,
)
from postergenre.models.threshold_policy import (
    DEFAULT_POLICY,
    THRESHOLD_POLICIES,
    policy_thresholds,
)

if TYPE_CHECKING:
    from postergenre.models.card import ModelCard


def evaluate_records(
    records: list[PosterRecord],
    probs: np.ndarray,
    card: ModelCard,
    thresholds: np.ndarray,
    *,
    unreadable: int = 0,
    plots_dir: Path | None = None,
    title: str = "",
    policy: str = DEFAULT_POLICY,
) -> dict[str, Any]:
    """`Predictor.evaluate`'s metrics: the model of `card` (as stored; its decision
    `thresholds` are those of threshold `policy`) predicted `probs` for `records`;
    `unreadable` posters could not be read. Multi-label metrics where both the model and the
    data are multi-label (with every policy the card records side by side), else single-label
    ones; with `plots_dir`, the pictures and `metrics.json` go there. An undefined number is
    null."""
    genres = list(card.genres)
    shared = [g for g in genres if any(g in r.genres for r in records)]
    if card.task == "multi" and infer_task(records, shared) == "multi":
        prevalence = card.training.get("train_prevalence")
        metrics = evaluate_multi_label(
            records, probs, genres, thresholds, prevalence, plots_dir, title
        )
        metrics["threshold_policy"] = policy
        metrics["threshold_policies"] = _policy_points(card, records, probs, genres)
        if plots_dir is not None:
            _plot_policy(metrics, plots_dir, title)
    else:  # single-label data: choose the most probable genre among those present
        metrics = evaluate_single_label(records, probs, genres, plots_dir, title)
    metrics["unreadable"] = unreadable
    if metrics["n"] == 0:
        raise UserError(
            "none of the posters carries a genre the model knows "
            f"(model genres: {', '.join(genres)})"
        )
    metrics = _finite_or_none(metrics)  # valid JSON: an undefined number is null, not NaN
    if plots_dir is not None:
        from postergenre.atomic import write_json

        write_json(plots_dir / "metrics.json", metrics)
    return metrics


def _policy_points(
    card: ModelCard, records: list[PosterRecord], probs: np.ndarray, genres: list[str]
) -> dict[str, dict[str, float]]:
    """Each threshold policy the card records, evaluated on the genres both sides know."""
    data_genres = {g for r in records for g in r.genres}
    columns = [j for j, g in enumerate(genres) if g in data_genres]
    y = np.array([[genres[j] in r.genres for j in columns] for r in records], dtype=np.int64)
    y = y.reshape(len(records), len(columns))
    points = {}
    for policy in THRESHOLD_POLICIES:
        if policy == DEFAULT_POLICY or policy in card.threshold_policies:
            thresholds = np.asarray(policy_thresholds(card, policy))[columns]
            points[policy] = operating_point(y, probs[:, columns], thresholds)
    return points


def _plot_policy(metrics: dict[str, Any], plots_dir: Path, title: str) -> None:
    from postergenre.evaluation.plots import plot_threshold_policy

    path = plot_threshold_policy(
        metrics["threshold_sweep"],
        metrics["genres_per_poster"]["true"],
        metrics["threshold_policies"],
        Path(plots_dir) / "threshold_policy.png",
        f"Threshold policies ({title}, n={metrics['n']}; in use: {metrics['threshold_policy']})",
    )
    metrics["threshold_plot"] = path.name


def _finite_or_none(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def evaluate_single_label(
    records: list[PosterRecord],
    probs: np.ndarray,
    model_genres: list[str],
    plots_dir: Path | None = None,
    title: str = "",
) -> dict[str, Any]:
    """Accuracy and friends over the genres both the model and the data know.

    The model chooses among the genres present in the data (its other outputs are ignored and
    listed); posters whose genre the model does not know are left out and counted.
    """
    index = {g: i for i, g in enumerate(model_genres)}
    present = sorted({g for r in records for g in r.genres if g in index}, key=index.__getitem__)
    columns = [index[g] for g in present]
    rows, y = [], []
    skipped_unknown = skipped_multi = 0
    for row, record in enumerate(records):
        known = [g for g in record.genres if g in index]
        if not known:
            skipped_unknown += 1
        elif len(known) > 1:
            skipped_multi += 1
        else:
            rows.append(row)
            y.append(present.index(known[0]))
    sub = (
        probs[np.asarray(rows, dtype=np.int64)][:, columns] if rows else np.zeros((0, len(columns)))
    )
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    metrics = single_label_metrics(np.asarray(y, dtype=np.int64), sub, present)
    metrics.update(
        **_vocabulary(records, model_genres),
        skipped={"unknown_genre": skipped_unknown, "several_genres": skipped_multi},
    )
    if plots_dir is not None:
        from postergenre.evaluation.plots import plot_confusion_matrix

        _plot_reliability(metrics, plots_dir, title)
        path = plot_confusion_matrix(
            metrics["confusion_matrix"],
            present,
            Path(plots_dir) / "confusion_matrix.png",
            f"Confusion matrix ({title}, n={metrics['n']})",
        )
        metrics["plot"] = path.name
    return metrics


def _plot_reliability(metrics: dict[str, Any], plots_dir: Path, title: str) -> None:
    from postergenre.evaluation.plots import plot_reliability

    ece = metrics["ece"]
    label = f"ECE {ece:.3f}" if ece is not None else "no posters"
    path = plot_reliability(
        metrics["calibration_bins"],
        Path(plots_dir) / "reliability.png",
        f"Reliability ({title}, n={metrics['n']}, {label})",
    )
    metrics["reliability_plot"] = path.name


def _vocabulary(records: list[PosterRecord], model_genres: list[str]) -> dict[str, list[str]]:
    """The genres only one side knows: the model's absent from the data (ignored) and the
    data's unknown to the model (left out)."""
    data_genres = {g for r in records for g in r.genres}
    return {
        "ignored_genres": [g for g in model_genres if g not in data_genres],
        "unknown_genres": sorted(data_genres - set(model_genres)),
    }


def _vocabulary_lines(metrics: dict[str, Any]) -> list[str]:
    """The report's closing lines on genres only one side knows (none when both agree)."""
    lines = []
    if metrics.get("ignored_genres"):
        lines.append(
            f"\nmodel genres absent from the data (ignored): {', '.join(metrics['ignored_genres'])}"
        )
    if metrics.get("unknown_genres"):
        lines.append(
            f"data genres the model does not know (left out): "
            f"{', '.join(metrics['unknown_genres'])}"
        )
    return lines


def _number(value: float | None, spec: str) -> str:
    """A metric formatted, or '-' where it is undefined (None)."""
    return format(
        "-" if value is None else value, spec.replace(".4f", "") if value is None else spec
    )


def _ece_line(metrics: dict[str, Any]) -> str:
    ece = metrics.get("ece")
    what = "top genre" if metrics["task"] == "single" else "every poster x genre"
    shown = "-" if ece is None else f"{ece:.4f}"
    return f"expected calibration error ({what}, 15 bins): {shown}"


def format_single_label(metrics: dict[str, Any]) -> str:
    """A plain-text report: headline numbers, per-genre table, confusion matrix."""
    lines = [
        f"posters: {metrics['n']}",
        f"accuracy: {metrics['accuracy']:.4f}   balanced accuracy: "
        f"{metrics['balanced_accuracy']:.4f}   macro F1: {metrics['macro_f1']:.4f}",
        _ece_line(metrics),
        "",
        f"{'genre':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for genre, row in metrics["per_genre"].items():
        lines.append(
            f"{genre:<16}{row['precision']:>10.3f}{row['recall']:>10.3f}"
            f"{row['f1']:>10.3f}{row['support']:>10d}"
        )
    genres = metrics["genres"]
    width = max(8, *(len(g) + 2 for g in genres))
    lines += [
        "",
        "confusion matrix (rows true, columns predicted):",
        " " * 16 + "".join(f"{g[: width - 1]:>{width}}" for g in genres),
    ]
    for genre, counts in zip(genres, metrics["confusion_matrix"], strict=True):
        lines.append(f"{genre:<16}" + "".join(f"{c:>{width}d}" for c in counts))
    return "\n".join(lines + _vocabulary_lines(metrics))


def evaluate_multi_label(
    records: list[PosterRecord],
    probs: np.ndarray,
    model_genres: list[str],
    thresholds: np.ndarray,
    train_prevalence: dict[str, float] | None = None,
    plots_dir: Path | None = None,
    title: str = "",
) -> dict[str, Any]:
    """Multi-label metrics over the genres both the model and the data know; the others are
    listed (`ignored_genres`: the model's, absent from the data; `unknown_genres`: the data's,
    unknown to the model)."""
    data_genres = {g for r in records for g in r.genres}
    shared = [g for g in model_genres if g in data_genres]
    columns = [model_genres.index(g) for g in shared]
    y = np.array([[g in r.genres for g in shared] for r in records], dtype=np.int64)
    y = y.reshape(len(records), len(shared))
    prevalence = None
    if train_prevalence:
        prevalence = np.array([train_prevalence.get(g, 0.0) for g in shared])
    metrics = multi_label_metrics(y, probs[:, columns], shared, thresholds[columns], prevalence)
    metrics["threshold_sweep"] = threshold_sweep(y, probs[:, columns])
    metrics.update(_vocabulary(records, model_genres))
    if plots_dir is not None:
        from postergenre.evaluation.plots import plot_precision_figures

        _plot_reliability(metrics, plots_dir, title)
        pr_path, ap_path = Path(plots_dir) / "pr_curves.png", Path(plots_dir) / "ap_by_genre.png"
        rows = plot_precision_figures(
            y, probs[:, columns], shared, pr_path, ap_path, f"{title}, n={metrics['n']}"
        )
        metrics["ap_intervals"] = {
            row["genre"]: [round(row["lower"], 6), round(row["upper"], 6)] for row in rows
        }
        metrics["plot"], metrics["ap_plot"] = pr_path.name, ap_path.name
    return metrics


def _count_line(metrics: dict[str, Any]) -> str:
    counts = metrics.get("genres_per_poster") or {}
    if not counts:
        return ""
    return (
        f"genres per poster: {counts['predicted']:.2f} predicted, {counts['true']:.2f} true; "
        f"a predicted genre below a non-predicted one on {metrics['inverted_share']:.0%} "
        "of posters"
    )


def format_multi_label(metrics: dict[str, Any]) -> str:
    """A plain-text report: headline numbers next to the trivial baselines, Hamming loss and
    subset accuracy next to theirs, the threshold policies and sweep, per-genre table."""
    half = metrics["at_0.5"]
    top2 = metrics["baselines"]["top2_genres"]
    policy = metrics.get("threshold_policy", DEFAULT_POLICY)
    lines = [
        f"posters: {metrics['n']}",
        f"{'':<34}{'mAP':>8}{'micro F1':>10}{'macro F1':>10}{'samples F1':>12}",
        f"{f'model, {policy} thresholds':<34}{_number(metrics['map'], '>8.4f')}"
        f"{metrics['micro_f1']:>10.4f}"
        f"{metrics['macro_f1']:>10.4f}{metrics['samples_f1']:>12.4f}",
        f"{'model, threshold 0.5':<34}{'':>8}{half['micro_f1']:>10.4f}{half['macro_f1']:>10.4f}"
        f"{half['samples_f1']:>12.4f}",
        f"{'baseline: always ' + ' + '.join(top2['genres']):<34}{'':>8}{top2['micro_f1']:>10.4f}"
        f"{top2['macro_f1']:>10.4f}{top2['samples_f1']:>12.4f}",
        f"{'baseline: genre frequency':<34}"
        f"{_number(metrics['baselines']['frequency_score']['map'], '>8.4f')}",
        _ece_line(metrics),
        _count_line(metrics),
        "",
        *_exactness_lines(metrics),
        *_policy_lines(metrics),
        "",
        f"{'genre':<16}{'AP':>8}{'F1':>8}{'threshold':>11}{'support':>9}",
    ]
    for genre, row in metrics["per_genre"].items():
        ap = "-" if row["ap"] is None else f"{row['ap']:.3f}"
        lines.append(
            f"{genre:<16}{ap:>8}{row['f1']:>8.3f}{row['threshold']:>11.3f}{row['support']:>9d}"
        )
    return "\n".join(lines + _vocabulary_lines(metrics))


def _exactness_lines(metrics: dict[str, Any]) -> list[str]:
    """Hamming loss and subset accuracy, each beside the answers that look at no poster."""
    if "hamming_loss" not in metrics:
        return []
    base = metrics["baselines"]
    common = base.get("most_common_set") or {}
    rows = [
        (f"model, {metrics.get('threshold_policy', DEFAULT_POLICY)} thresholds", metrics),
        ("model, threshold 0.5", metrics["at_0.5"]),
        ("baseline: no genre", base.get("no_genre") or {}),
        ("baseline: always " + " + ".join(base["top2_genres"]["genres"]), base["top2_genres"]),
        (f"baseline: always {' + '.join(common.get('genres') or ['no genre'])}", common),
    ]
    width = max(34, *(len(label) + 2 for label, _ in rows))
    lines = [f"{'':<{width}}{'Hamming loss':>14}{'subset accuracy':>17}"]
    for label, row in rows:
        lines.append(
            f"{label:<{width}}{_number(row.get('hamming_loss'), '>14.4f')}"
            f"{_number(row.get('subset_accuracy'), '>17.4f')}"
        )
    no_genre = (base.get("no_genre") or {}).get("hamming_loss")
    if no_genre is not None:
        lines.append(
            f"(label-wise accuracy is 1 - Hamming loss: predicting no genre at all already "
            f"scores {1 - no_genre:.3f}; the last baseline is these posters' most common "
            "genre set)"
        )
    return [*lines, ""]


def _policy_lines(metrics: dict[str, Any]) -> list[str]:
    """The threshold policies side by side, then the shared-threshold sweep every 0.1."""
    points = metrics.get("threshold_policies") or {}
    sweep = metrics.get("threshold_sweep") or []
    true = (metrics.get("genres_per_poster") or {}).get("true")
    lines = []
    if points:
        lines.append(
            f"{'threshold policy':<20}{'micro F1':>10}{'macro F1':>10}{'genres/poster':>15}"
            f"{'Hamming':>10}{'subset acc':>12}"
        )
        for name, p in points.items():
            mark = " (in use)" if name == metrics.get("threshold_policy") else ""
            lines.append(
                f"{name + mark:<20}{_number(p['micro_f1'], '>10.4f')}"
                f"{_number(p['macro_f1'], '>10.4f')}{_number(p['genres_per_poster'], '>15.2f')}"
                f"{_number(p['hamming_loss'], '>10.4f')}{_number(p['subset_accuracy'], '>12.4f')}"
            )
        lines.append("")
    if sweep:
        shown = "-" if true is None else f"{true:.2f}"
        lines.append(
            f"one shared threshold (every 0.1; --json: every 0.05), labels {shown} genres/poster:"
        )
        lines.append(
            f"{'threshold':>10}{'micro F1':>10}{'macro F1':>10}{'genres/poster':>15}{'Hamming':>10}"
        )
        for row in sweep:
            if round(row["threshold"] * 100) % 10:
                continue
            lines.append(
                f"{row['threshold']:>10.2f}{_number(row['micro_f1'], '>10.4f')}"
                f"{_number(row['macro_f1'], '>10.4f')}"
                f"{_number(row['genres_per_poster'], '>15.2f')}"
                f"{_number(row.get('hamming_loss'), '>10.4f')}"
            )
    return lines
