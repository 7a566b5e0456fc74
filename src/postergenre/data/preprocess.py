"""From a decoded poster to the float32 array a model reads: resize, then normalise.

`InputSpec` travels inside every model card, so a poster is prepared the same way for training,
PyTorch, ONNX Runtime, Grad-CAM and the web app. NumPy only: the fast prediction path never
imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from postergenre.data.decode import INTERPOLATIONS, RESIZE_MODES, decode_poster, resize_poster


@dataclass(frozen=True)
class Normalisation:
    """Per-channel `(x / 255 - mean) / std`, the same float32 steps in NumPy (ONNX Runtime's
    input) and in torch (PyTorch's: multi-threaded, and channels-last in memory, which the
    convolutions run fastest on)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) pixel values in [0, 255] (uint8 or float) -> float32 (B, 3, H, W)."""
        x = np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
        x -= np.asarray(self.mean, dtype=np.float32)
        x /= np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def tensor(self, pixels: Any) -> Any:
        """The same as a torch tensor: (B, H, W, 3) array or tensor -> float32 (B, 3, H, W)."""
        import torch

        if isinstance(pixels, np.ndarray):
            array = np.ascontiguousarray(pixels)
            # torch cannot wrap read-only memory (memory-mapped cache rows, PIL-backed arrays)
            pixels = torch.from_numpy(array if array.flags.writeable else array.copy())
        x = pixels.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)


UNIT_RANGE = Normalisation((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
# EfficientNet-Lite weights were trained on (x * 255 - 127) / 128, i.e. [-1, 1].
SYMMETRIC_RANGE = Normalisation((127 / 255,) * 3, (128 / 255,) * 3)


@dataclass(frozen=True)
class InputSpec:
    """Everything needed to turn a poster into model input."""

    width: int
    height: int
    resize: str
    normalisation: Normalisation
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {self.resize!r}; expected one of {RESIZE_MODES}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; expected one of "
                f"{tuple(INTERPOLATIONS)}"
            )

    def resize_image(self, image: Image.Image) -> np.ndarray:
        """An RGB poster -> uint8 (height, width, 3) at this input size."""
        return resize_poster(image, self.width, self.height, self.resize, self.interpolation)

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) at this size -> float32 (B, 3, H, W) model input."""
        return self.normalisation(pixels)

    def prepare(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Resize and normalise decoded posters in one call: float32 (B, 3, H, W)."""
        if not images:
            return np.zeros((0, 3, self.height, self.width), np.float32)
        return self.normalise(np.stack([self.resize_image(image) for image in images]))

    def to_json(self) -> dict:
        """The `input` section of model.json."""
        return {
            "width": self.width,
            "height": self.height,
            "resize": self.resize,
            "interpolation": self.interpolation,
            "mean": list(self.normalisation.mean),
            "std": list(self.normalisation.std),
        }


def load_poster_array(path: str | Path, spec: InputSpec) -> np.ndarray:
    """Decode (reduced, when the file is much larger than `spec` needs) and resize to `spec`'s
    input in one call: the unit of work the cache runs once per file."""
    return spec.resize_image(decode_poster(path, fit=(spec.width, spec.height)))
