"""Architectures by name: `create_model("seed-cnn", num_outputs=3)`.

Each model module registers its architectures beside its code with `register(ArchSpec(...))`;
the registry imports those modules (and so torch) only when an architecture is first asked
for. An entry carries its input spec and training defaults, so a new architecture is one
module and one line in `_MODEL_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from postergenre.data.preprocess import InputSpec
from postergenre.errors import UserError
from postergenre.models.names import did_you_mean, match_name

if TYPE_CHECKING:
    from torch import nn

_MODEL_MODULES = (
    "postergenre.models.seed_cnn",
    "postergenre.models.efficientnet_lite",
    "postergenre.models.lite_ensemble",
    "postergenre.models.knn",
)


@dataclass(frozen=True)
class ArchSpec:
    """A registered architecture: how to build it, feed it and train it."""

    name: str
    build: Callable[[int, bool], nn.Module]  # (num_outputs, pretrained) -> module
    input: InputSpec
    description: str
    # Ways to fit it, the default first: scratch (gradient training from random weights),
    # linear-probe (a head on frozen embeddings), finetune, knn (a vote over embeddings).
    modes: tuple[str, ...] = ("scratch",)
    default_task: str | None = None  # the task when the data could be either (None: the data's)
    optimizer: str = "adamw"
    lr: float = 1e-3
    batch_size: int = 32
    pretrained: bool = False  # whether the backbone starts from shipped ImageNet weights
    embedding_arch: str | None = None  # the arch whose frozen embeddings it uses (k-NN, probes)


_REGISTRY: dict[str, ArchSpec] = {}
_loaded = False


def register(spec: ArchSpec) -> ArchSpec:
    """Add an architecture to the registry (called by each model module at import)."""
    _REGISTRY[spec.name] = spec
    return spec


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for module in _MODEL_MODULES:
            importlib.import_module(module)
        _loaded = True


def get_arch(name: str) -> ArchSpec:
    """Look up an architecture, by its name in any case (`match_name`); an unknown name is a
    user error saying which known names are close (or listing them all)."""
    _load_all()
    found = match_name(name, _REGISTRY)
    if found is None:
        raise UserError(
            f"unknown architecture {name!r}; {did_you_mean(name, _REGISTRY)} "
            "(see 'postergenre models')"
        )
    return _REGISTRY[found]


def available_archs() -> list[str]:
    """Registered architecture names."""
    _load_all()
    return sorted(_REGISTRY)


def create_model(name: str, num_outputs: int, pretrained: bool = False) -> nn.Module:
    """Build architecture `name` with `num_outputs` logits."""
    return get_arch(name).build(num_outputs, pretrained)
