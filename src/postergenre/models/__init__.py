"""Models: the architecture registry and its entries."""

from postergenre.data.transforms import UNIT_RANGE, InputSpec
from postergenre.models._registry import (
    ArchSpec,
    available_archs,
    create_model,
    get_arch,
    register,
)
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

__all__ = ["ArchSpec", "SeedCNN", "available_archs", "create_model", "get_arch", "register"]
