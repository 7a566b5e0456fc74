"""Where models are: the bundles shipped in the package, and how a name becomes a folder."""

from __future__ import annotations

from pathlib import Path

from postergenre.errors import UserError
from postergenre.models.bundle_files import check_safetensors, read_regular_file
from postergenre.models.card import CARD_FILE, MAX_CARD_BYTES, WEIGHTS_FILE, CardError
from postergenre.models.names import did_you_mean, match_name
from postergenre.paths import user_path

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
DEFAULT_MODEL = "imdb-20"


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / CARD_FILE).is_file())


def resolve_model(name_or_path: str | Path | None) -> Path:
    """Where a model is: a bundle folder from a bundled name (exact, or in any case when that
    is unambiguous), a bundle folder, a run folder (its `model/`) or a bundle's `model.json`;
    or an exported graph file (`export --out model.onnx`), returned as it is (`is_graph_file`).
    Anything else is refused in one line, with "did you mean" for a mistyped bundled name."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    text = str(name_or_path)
    bundled = bundled_models()
    path = user_path(text)
    if text not in bundled and path.exists() and is_graph_file(path):
        return path
    candidates = [path, path / "model"] + ([path.parent] if path.name == CARD_FILE else [])
    name = match_name(text, bundled)
    if text in bundled or (name is not None and not path.exists()):
        candidates = [BUNDLED_DIR / str(name)]
    for folder in candidates:
        # exists(), not is_file(): a card that is a FIFO or a folder is refused, not passed by
        if (folder / CARD_FILE).exists():
            _check_files(folder)
            return folder
    known = ", ".join(bundled) or "none installed"
    close = did_you_mean(text, bundled) if bundled and not path.exists() else ""
    raise UserError(
        f"no model at {text!r}: give a bundle folder, a run folder, an exported .onnx file or "
        f"a bundled name ({known})" + (f"; {close}" if close.startswith("did you") else "")
    )


def is_graph_file(path: Path) -> bool:
    """Whether a resolved model is an exported graph file rather than a bundle folder (a
    bundle's own `model.json` names its folder)."""
    return not path.is_dir() and path.name != CARD_FILE


def _check_files(folder: Path) -> None:
    """Refuse a bundle whose card or weights is not a regular file of credible size, before
    anything reads (or hashes) them whole."""
    read_regular_file(folder / CARD_FILE, MAX_CARD_BYTES)
    if not (folder / WEIGHTS_FILE).exists():
        raise CardError(f"{folder} has no {WEIGHTS_FILE}")
    check_safetensors(folder / WEIGHTS_FILE)


def _score(value: object) -> str:
    """A metric to three decimals; "n/a" where the card says null (undefined on its data)."""
    return f"{value:.3f}" if isinstance(value, int | float) else "n/a"


def _headline(metrics: dict) -> str:
    test = metrics.get("test") or {}
    if "accuracy" in test:
        text = f"test accuracy {_score(test['accuracy'])}"
    elif "map" in test:
        text = (
            f"test mAP {_score(test['map'])}, micro F1 {_score(test.get('micro_f1'))}, "
            f"macro F1 {_score(test.get('macro_f1'))}"
        )
    else:
        return "no test metrics"
    if isinstance(test.get("ece"), int | float):
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
        extra = "text" if card.text is not None and card.text.sentence else "ocr"
        reads = f" + poster text (OCR, needs postergenre[{extra}])" if card.reads_text else ""
        lines.append(
            f"{name + default:<20}{card.architecture} {card.kind}{reads}, {card.task}-label, "
            f"{len(card.genres)} genres; {_headline(card.metrics)}"
        )
    return lines
