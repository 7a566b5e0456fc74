"""Training augmentation, and cached uint8 pixels to the float tensors a model reads.

Augmentation works on batches already decoded and resized by the cache, so no epoch touches a
JPEG. There is no horizontal flip by default: posters carry text, and mirrored titles are not
something the model will ever see at prediction time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from postergenre.data.preprocess import Normalisation


@dataclass(frozen=True)
class Augmentation:
    """Random resized crop and mild colour jitter, applied per poster."""

    min_scale: float = 0.7
    brightness: float = 0.15
    contrast: float = 0.15
    saturation: float = 0.15
    hflip: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a float (B, 3, H, W) batch in [0, 1] (before normalisation)."""
        b, _, h, w = x.shape
        out = torch.empty_like(x)
        rand = torch.rand((b, 7), generator=generator)
        for i in range(b):
            scale = self.min_scale + (1 - self.min_scale) * rand[i, 0].item()
            ch, cw = max(1, round(h * scale**0.5)), max(1, round(w * scale**0.5))
            top = int(rand[i, 1].item() * (h - ch + 1))
            left = int(rand[i, 2].item() * (w - cw + 1))
            crop = x[i : i + 1, :, top : top + ch, left : left + cw]
            out[i] = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]
        jitter = (rand[:, 3:6] * 2 - 1) * torch.tensor(
            [self.brightness, self.contrast, self.saturation]
        )
        brightness = (1 + jitter[:, 0]).view(b, 1, 1, 1)
        contrast = (1 + jitter[:, 1]).view(b, 1, 1, 1)
        saturation = (1 + jitter[:, 2]).view(b, 1, 1, 1)
        out = out * brightness
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * contrast + mean
        gray = (out * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        out = (out - gray) * saturation + gray
        if self.hflip:
            flip = rand[:, 6] < 0.5
            out[flip] = out[flip].flip(-1)
        return out.clamp_(0.0, 1.0)


def to_model_input(
    pixels: np.ndarray | torch.Tensor,
    normalisation: Normalisation,
    augment: Augmentation | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 (B, H, W, 3) pixels -> normalised float (B, 3, H, W), augmented when asked."""
    if augment is None:
        return normalisation.tensor(pixels)
    batch = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.array(pixels))
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    x = augment(x, generator if generator is not None else torch.Generator())
    return normalisation.tensor((x * 255.0).permute(0, 2, 3, 1))
