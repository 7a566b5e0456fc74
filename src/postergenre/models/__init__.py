"""Models: the architecture registry, model cards and bundles.

Importing this package is cheap: the architectures (and torch) load on first use.
"""

from postergenre.models._registry import ArchSpec, available_archs, create_model, get_arch, register
from postergenre.models.card import ModelCard, to_probabilities
from postergenre.models.catalog import DEFAULT_MODEL, bundled_models, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "ArchSpec",
    "ModelCard",
    "available_archs",
    "bundled_models",
    "create_model",
    "get_arch",
    "register",
    "resolve_model",
    "to_probabilities",
]
