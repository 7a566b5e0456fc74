"""Evaluate predictions against records whose genre vocabulary may differ from the model's,
and format the result as text tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from postergenre.data.records import PosterRecord
from postergenre.data.targets import infer_task
from postergenre.errors import UserError
from postergenre.evaluation.metrics import multi_label_metrics, single_label_metrics

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
) -> dict[str, Any]:
    """`Predictor.evaluate`'s metrics: the model of `card` (with its decision `thresholds`)
    predicted `probs` for `records`; `unreadable` posters could not be read. Multi-label
    metrics where both the model and the data are multi-label, else single-label ones; with
    `plots_dir`, the pictures and `metrics.json` go there. An undefined number is null."""
    genres = list(card.genres)
    shared = [g for g in genres if any(g in r.genres for r in records)]
    if card.task == "multi" and infer_task(records, shared) == "multi":
        prevalence = card.training.get("train_prevalence")
        metrics = evaluate_multi_label(
            records, probs, genres, thresholds, prevalence, plots_dir, title
        )
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
    """A plain-text report: headline numbers next to the trivial baselines, per-genre table."""
    half = metrics["at_0.5"]
    top2 = metrics["baselines"]["top2_genres"]
    lines = [
        f"posters: {metrics['n']}",
        f"{'':<34}{'mAP':>8}{'micro F1':>10}{'macro F1':>10}{'samples F1':>12}",
        f"{'model, tuned thresholds':<34}{_number(metrics['map'], '>8.4f')}"
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
        f"{'genre':<16}{'AP':>8}{'F1':>8}{'threshold':>11}{'support':>9}",
    ]
    for genre, row in metrics["per_genre"].items():
        ap = "-" if row["ap"] is None else f"{row['ap']:.3f}"
        lines.append(
            f"{genre:<16}{ap:>8}{row['f1']:>8.3f}{row['threshold']:>11.3f}{row['support']:>9d}"
        )
    return "\n".join(lines + _vocabulary_lines(metrics))
