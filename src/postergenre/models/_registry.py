"""Architectures by name: `create_model("seed-cnn", num_outputs=3)`.

Each entry carries its input spec (size, resize, normalisation) and training defaults, so a new
architecture is one `register(...)` call and nothing else needs to know about it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from postergenre.data.transforms import InputSpec
from postergenre.errors import UserError


@dataclass(frozen=True)
class ArchSpec:
    """A registered architecture: how to build it and how to feed it."""

    name: str
    build: Callable[[int, bool], nn.Module]  # (num_outputs, pretrained) -> module
    input: InputSpec
    description: str
    optimizer: str = "adamw"
    lr: float = 1e-3
    batch_size: int = 32
    pretrained: bool = False  # whether the backbone starts from shipped ImageNet weights
    embedding_arch: str | None = None  # the arch whose frozen embeddings it uses (k-NN, probes)


_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    """Add an architecture to the registry."""
    _REGISTRY[spec.name] = spec
    return spec


def get_arch(name: str) -> ArchSpec:
    """Look up an architecture; unknown names are a user error listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"unknown architecture {name!r}; available: {', '.join(available_archs())}"
        ) from None


def available_archs() -> list[str]:
    """Registered architecture names."""
    return sorted(_REGISTRY)


def create_model(name: str, num_outputs: int, pretrained: bool = False) -> nn.Module:
    """Build architecture `name` with `num_outputs` logits."""
    return get_arch(name).build(num_outputs, pretrained)
