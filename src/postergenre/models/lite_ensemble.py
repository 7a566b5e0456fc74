"""Several EfficientNet-Lite backbones on one poster: the ensemble behind the bundled models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from postergenre.models._registry import ArchSpec, register
from postergenre.models.efficientnet_lite import (
    HEAD_CHANNELS,
    PORTRAIT_SIZES,
    EfficientNetLite,
    load_imagenet_weights,
    portrait_input,
)

__all__ = ["ENSEMBLE_VARIANTS", "LiteEnsemble", "lite_ensemble"]


class LiteEnsemble(nn.Module):
    """Several EfficientNet-Lite backbones on one poster, their features concatenated.

    One input (the first variant's portrait size) feeds every backbone; the others get it
    resized bilinearly inside the network to their own portrait size, so the ensemble is one
    graph with one input everywhere a single backbone works (probe, predict, ONNX, index).
    Each backbone contributes its last feature map and, optionally, the last block of some
    earlier stages; every map is pooled (average, and max if asked) and the pooled vectors are
    concatenated in a fixed order before the linear classifier.
    """

    def __init__(
        self,
        variants: tuple[str, ...],
        num_classes: int,
        pooling: tuple[str, ...] = ("avg",),
        stages: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        if not pooling or not set(pooling) <= {"avg", "max"}:
            raise ValueError(f"pooling must be avg and/or max, got {pooling}")
        self.variants, self.pooling, self.stages = tuple(variants), tuple(pooling), tuple(stages)
        self.backbones = nn.ModuleDict({v: EfficientNetLite(v) for v in variants})
        width = sum(
            HEAD_CHANNELS + sum(b.stage_channels[s] for s in self.stages)
            for b in self.backbones.values()
        )
        self.num_features = width * len(self.pooling)
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)

    def backbone_input(self, variant: str, x: Tensor) -> Tensor:
        """The one input, resized to backbone `variant`'s own portrait size."""
        width, height = PORTRAIT_SIZES[variant]
        if (x.shape[-2], x.shape[-1]) == (height, width):
            return x
        return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)

    def forward_features(self, x: Tensor) -> tuple[Tensor, ...]:
        """Every map that is pooled, backbone by backbone (each at its own resolution)."""
        maps: list[Tensor] = []
        for variant, backbone in self.backbones.items():
            maps.extend(backbone.stage_maps(self.backbone_input(variant, x), self.stages))
        return tuple(maps)

    def pool(self, maps: tuple[Tensor, ...]) -> Tensor:
        """(B, num_features): each map's average (and max) pool, concatenated."""
        parts = []
        for fmap in maps:
            if "avg" in self.pooling:
                parts.append(fmap.mean(dim=(2, 3)))
            if "max" in self.pooling:
                parts.append(fmap.amax(dim=(2, 3)))
        return torch.cat(parts, dim=1)

    def forward_head(self, maps: tuple[Tensor, ...]) -> Tensor:
        return self.classifier(self.pool(maps))

    def embed(self, x: Tensor) -> Tensor:
        """The concatenated pooled features (no classifier)."""
        return self.pool(self.forward_features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def lite_ensemble(
    variants: tuple[str, ...],
    num_classes: int,
    pretrained: bool = True,
    pooling: tuple[str, ...] = ("avg",),
    stages: tuple[int, ...] = (),
) -> LiteEnsemble:
    """An ensemble of Lite backbones, each with its ImageNet weights when `pretrained`."""
    model = LiteEnsemble(variants, num_classes, pooling, stages)
    if pretrained:
        for backbone in model.backbones.values():
            load_imagenet_weights(backbone)
    return model


# Three backbones on one poster: 20-genre mAP above any one of them (BENCHMARKS.md, section 10).
ENSEMBLE_VARIANTS = ("lite0", "lite1", "lite2")
ENSEMBLE_POOLING: tuple[str, ...] = ("avg",)
ENSEMBLE_STAGES: tuple[int, ...] = (5, 6)
register(
    ArchSpec(
        name="efficientnet-lite012",
        build=lambda n, pretrained: lite_ensemble(
            ENSEMBLE_VARIANTS, n, pretrained, ENSEMBLE_POOLING, ENSEMBLE_STAGES
        ),
        input=portrait_input("lite0"),
        description="EfficientNet-Lite0 + Lite1 + Lite2, ImageNet weights, features "
        "concatenated; one 224x336 input, resized inside to each backbone's portrait size "
        "(linear-probe or adapt)",
        modes=("linear-probe", "adapt"),
        optimizer="adamw",
        lr=3e-4,
        batch_size=32,
        pretrained=True,
        embedding_arch="efficientnet-lite012",
    )
)
