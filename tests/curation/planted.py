"""Test helpers: distinct generated posters, and copies of some of them resized,
recompressed, framed, mirrored or copied byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

DISTINCT = 8
# copy name -> (the poster it copies, how)
PLANTED = {
    "copy-exact.jpg": ("poster0.jpg", "exact"),
    "copy-resized.jpg": ("poster1.jpg", "resize"),
    "copy-recompressed.jpg": ("poster2.jpg", "recompress"),
    "copy-border.jpg": ("poster3.jpg", "border"),
    "copy-mirror.jpg": ("poster4.jpg", "mirror"),
}


def make_artwork(path: Path, seed: int, size: tuple[int, int] = (160, 240)) -> Path:
    """A poster-like image: a gradient and a few random shapes, different for every seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, h)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp) * np.ones((1, w, 1))
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.integers(0, w - 20), rng.integers(0, h - 20)
        x1, y1 = x0 + rng.integers(15, w // 2), y0 + rng.integers(15, h // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1, y1], fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=92)
    return path


def plant_copy(source: Path, out: Path, how: str) -> Path:
    """A copy of `source` changed the `how` way."""
    if how == "exact":
        shutil.copyfile(source, out)
        return out
    image = Image.open(source).convert("RGB")
    if how == "resize":
        image = image.resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS)
    elif how == "border":
        image = ImageOps.expand(image, border=12, fill=(255, 255, 255))
    elif how == "mirror":
        image = ImageOps.mirror(image)
    image.save(out, quality=35 if how == "recompress" else 92)
    return out


def make_planted_folder(root: Path) -> Path:
    """ROOT with `DISTINCT` distinct posters and the `PLANTED` copies."""
    for i in range(DISTINCT):
        make_artwork(root / f"poster{i}.jpg", seed=100 + i)
    for name, (source, how) in PLANTED.items():
        plant_copy(root / source, root / name, how)
    return root
