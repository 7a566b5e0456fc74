"""Models: the architecture registry and its entries."""

from postergenre.data.transforms import SYMMETRIC_RANGE, UNIT_RANGE, InputSpec
from postergenre.models._registry import (
    ArchSpec,
    available_archs,
    create_model,
    get_arch,
    register,
)
from postergenre.models.efficientnet_lite import efficientnet_lite
from postergenre.models.knn import knn_classifier
from postergenre.models.seed_cnn import SeedCNN

register(
    ArchSpec(
        name="seed-cnn",
        build=lambda n, pretrained: SeedCNN(n),
        input=InputSpec(150, 150, "squash", UNIT_RANGE),
        description="the article's small CNN (150x150, Conv 16/32/64, Dense 1024), from scratch",
        optimizer="rmsprop",
        lr=1e-3,
        batch_size=32,
    )
)

# Posters are ~2:3 portraits and the network pools globally, so each Lite model sees the full
# portrait at its native width (224/240/260) and 1.5x that height: no crop, no squash to square.
_LITE_SIZES = {"lite0": (224, 336), "lite1": (240, 360), "lite2": (260, 390)}


def _lite(variant: str):
    return lambda n, pretrained: efficientnet_lite(variant, n, pretrained=pretrained)


def _knn(variant: str):
    return lambda n, pretrained: knn_classifier(variant, n, pretrained=pretrained)


for _variant, (_width, _height) in _LITE_SIZES.items():
    _input = InputSpec(_width, _height, "squash", SYMMETRIC_RANGE)
    register(
        ArchSpec(
            name=f"efficientnet-{_variant}",
            build=_lite(_variant),
            input=_input,
            description=f"EfficientNet-{_variant.title()}, ImageNet weights, {_width}x{_height} "
            "portrait input (linear-probe or finetune)",
            optimizer="adamw",
            lr=3e-4,
            batch_size=32,
            pretrained=True,
            embedding_arch=f"efficientnet-{_variant}",
        )
    )
    register(
        ArchSpec(
            name="knn" if _variant == "lite0" else f"knn-{_variant}",
            build=_knn(_variant),
            input=_input,
            description=f"k-nearest neighbours (cosine) over EfficientNet-{_variant.title()} "
            "embeddings",
            pretrained=True,
            embedding_arch=f"efficientnet-{_variant}",
        )
    )

__all__ = ["ArchSpec", "SeedCNN", "available_archs", "create_model", "get_arch", "register"]
