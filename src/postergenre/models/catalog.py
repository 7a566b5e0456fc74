"""Where models are: the bundles shipped in the package, and how a name becomes a folder."""

from __future__ import annotations

from pathlib import Path

from postergenre.errors import UserError
from postergenre.models.card import CARD_FILE
from postergenre.paths import user_path

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
DEFAULT_MODEL = "imdb-20"


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / CARD_FILE).is_file())


def resolve_model(name_or_path: str | Path | None) -> Path:
    """A bundle folder from a bundled name, a bundle folder, or a run folder (its `model/`)."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    text = str(name_or_path)
    if text in bundled_models():
        return BUNDLED_DIR / text
    path = user_path(text)
    if (path / CARD_FILE).is_file():
        return path
    if (path / "model" / CARD_FILE).is_file():
        return path / "model"
    if path.name == CARD_FILE and path.is_file():
        return path.parent
    known = ", ".join(bundled_models()) or "none installed"
    raise UserError(
        f"no model at {text!r}: give a bundle folder, a run folder, or a bundled name ({known})"
    )


def _headline(metrics: dict) -> str:
    test = metrics.get("test") or {}
    if "accuracy" in test:
        text = f"test accuracy {test['accuracy']:.3f}"
    elif "map" in test:
        text = (
            f"test mAP {test['map']:.3f}, micro F1 {test.get('micro_f1', float('nan')):.3f}, "
            f"macro F1 {test.get('macro_f1', float('nan')):.3f}"
        )
    else:
        return "no test metrics"
    if isinstance(test.get("ece"), float):
        text += f", ECE {test['ece']:.3f}"
    latency = metrics.get("latency") or {}
    if isinstance(latency.get("p50_ms"), int | float):
        text += f"; {latency['p50_ms']:.0f} ms per poster (p50, when built)"
    return text


def describe_bundled() -> list[str]:
    """One line per bundled model: name, architecture, task, genres, test headline."""
    from postergenre.models.card import ModelCard

    lines = []
    for name in bundled_models():
        card = ModelCard.read(BUNDLED_DIR / name)
        default = " (default)" if name == DEFAULT_MODEL else ""
        reads = " + poster text (OCR, needs postergenre[ocr])" if card.reads_text else ""
        lines.append(
            f"{name + default:<20}{card.architecture} {card.kind}{reads}, {card.task}-label, "
            f"{len(card.genres)} genres; {_headline(card.metrics)}"
        )
    return lines
