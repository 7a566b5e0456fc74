"""The article's network, faithfully: 150x150x3 in [0, 1]; Conv 16/32/64 (3x3, ReLU, valid
padding as in Keras), each followed by 2x2 max-pool; Flatten; Dense 1024 ReLU; Dense N."""

from __future__ import annotations

import torch
from torch import nn

from postergenre.data.preprocess import UNIT_RANGE, InputSpec
from postergenre.models._registry import ArchSpec, register


class SeedCNN(nn.Module):
    """18.97M parameters for 3 genres, almost all in the 18,496 x 1024 dense layer."""

    def __init__(self, num_outputs: int, input_size: tuple[int, int] = (150, 150)):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.pool = nn.MaxPool2d(2)
        h, w = input_size
        for _ in range(3):  # conv 3x3 valid then pool /2
            h, w = (h - 2) // 2, (w - 2) // 2
        self.dense = nn.Linear(64 * h * w, 1024)
        self.classifier = nn.Linear(1024, num_outputs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolution's activations (B, 64, 34, 34): what Grad-CAM looks at."""
        return self.features(x)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """Pool, flatten and the two dense layers -> logits (softmax lives in the loss)."""
        x = torch.flatten(self.pool(fmap), 1)
        return self.classifier(torch.relu(self.dense(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


register(
    ArchSpec(
        name="seed-cnn",
        build=lambda n, pretrained: SeedCNN(n),
        input=InputSpec(150, 150, "squash", UNIT_RANGE),
        description="the article's small CNN (150x150, Conv 16/32/64, Dense 1024), from scratch",
        modes=("scratch",),
        default_task="single",  # the article's network is single-label unless asked otherwise
        optimizer="rmsprop",
        lr=1e-3,
        batch_size=32,
    )
)
