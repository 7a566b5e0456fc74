"""Grad-CAM (Selvaraju et al., 2017) on the last convolutional feature map of any model.

Every architecture exposes `forward_features(x) -> (B, C, h, w)` and `forward_head(fmap)`, so the
backbone runs once without a graph and only the head is differentiated: frozen parameters
(`requires_grad=False`) do not matter, and no parameter's `.grad` is touched.

An ensemble's `forward_features` gives several maps (one per backbone, at different
resolutions). Its heatmap is the sum of each map's Grad-CAM (the map weighted by the target's
gradient), each resized to the finest map's grid, normalised once: where the backbones together
find evidence for the genre.

A model that also reads the poster's text (`TextFusion`) is explained on its image part: the
text adds a constant to each logit, so the probability shown (and the default genre) include
the text, and the heatmap shows where the pixels add evidence on top of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from postergenre.atomic import atomic_path
from postergenre.data.decode import input_box
from postergenre.data.preprocess import InputSpec
from postergenre.data.text import read_poster_texts
from postergenre.errors import UserError
from postergenre.models.card import ModelCard, to_probabilities
from postergenre.models.knn import KNNClassifier
from postergenre.models.text_fusion import TextFusion
from postergenre.paths import user_path

OVERLAY_ALPHA = 0.45
COLORMAP = "jet"


@dataclass
class Explanation:
    """A Grad-CAM heatmap for one genre of one poster."""

    genre: str
    probability: float
    heatmap: np.ndarray  # (H, W) float32 in [0, 1] at the model's input size
    overlay: Image.Image  # the poster, original size, with the coloured heatmap blended in
    raw: np.ndarray  # (h, w) float32 in [0, 1] at the feature map's resolution
    text: str | None = None  # what OCR read, for a model that reads the poster's text

    def save(self, out: str | Path, npy: bool = False) -> list[Path]:
        """Write the overlay (.png, .jpg or .webp) and, with `npy`, the heatmap beside it as
        .npy; both atomically. Returns the paths written."""
        out = Path(out)
        formats = dict(zip(OVERLAY_FORMATS, ("PNG", "JPEG", "JPEG", "WEBP"), strict=True))
        if out.suffix.lower() not in formats:
            raise UserError(f"a heatmap overlay is written as .png, .jpg or .webp, not {out.name}")
        with atomic_path(out) as tmp:
            self.overlay.save(tmp, format=formats[out.suffix.lower()])
        written = [out]
        if npy:
            with atomic_path(out.with_suffix(".npy")) as tmp, open(tmp, "wb") as handle:
                np.save(handle, self.heatmap)
            written.append(out.with_suffix(".npy"))
        return written


OVERLAY_FORMATS = (".png", ".jpg", ".jpeg", ".webp")


def overlay_path(poster: str | Path, out: str | Path | None = None) -> Path:
    """Where `explain` writes the overlay of `poster`, as an absolute path: `out` when it names
    a file; `POSTER_NAME.gradcam.png` inside `out` when it is a folder (one that exists, or
    written with a trailing slash; created if need be); without `out`, in the current folder,
    never beside the poster (poster folders are often shared or read-only data sets)."""
    name = f"{Path(poster).stem}.gradcam.png"
    if out is None:
        target = Path(name)
    else:
        text = str(out)
        folder = text.endswith(("/", os.sep)) or user_path(text).is_dir()
        target = user_path(text) / name if folder else user_path(text)
    if target.suffix.lower() not in OVERLAY_FORMATS:
        raise UserError(f"--out must end in .png, .jpg or .webp (or name a folder): {out}")
    return target.absolute()


def _target_score(
    model: nn.Module, fmap: torch.Tensor, logits: torch.Tensor, target: int
) -> torch.Tensor:
    """The scalar Grad-CAM differentiates: the target logit, except for k-NN."""
    if isinstance(model, KNNClassifier):
        # A unanimous neighbour vote is constant (zero gradient), so explain instead what makes
        # the poster similar to its nearest training posters of the target genre.
        members = model.bank[model.labels[:, target] > 0]
        if not len(members):
            return logits[0, target]
        query = F.normalize(fmap.mean(dim=(2, 3)), dim=1)
        sims = query @ members.T
        return sims.topk(min(int(model.k), len(members)), dim=1).values.mean()
    return logits[0, target]


def _cam(fmap: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * fmap).sum(dim=1))[0]


def _cam_and_logits(
    model: nn.Module, x: torch.Tensor, target: int | None, text_logits: torch.Tensor | None = None
) -> tuple[np.ndarray, torch.Tensor, int]:
    """Grad-CAM map (h, w), the logits (1, n) and the target used (None: the top logit);
    `text_logits` (1, n): what the poster's text adds to each logit."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            features = model.forward_features(x)
        several = isinstance(features, tuple | list)
        maps = [f.detach().requires_grad_(True) for f in (features if several else [features])]
        with torch.enable_grad():
            logits = model.forward_head(tuple(maps) if several else maps[0])
            if text_logits is not None:
                logits = logits + text_logits
            if target is None:
                target = int(logits[0].argmax())
            score = _target_score(model, maps[0], logits, target)
            grads = torch.autograd.grad(score, maps, allow_unused=True)
    finally:
        model.train(was_training)
    height = max(m.shape[-2] for m in maps)
    width = max(m.shape[-1] for m in maps)
    cam = torch.zeros(height, width)
    for fmap, grad in zip(maps, grads, strict=True):
        if grad is None:
            continue
        one = _cam(fmap.detach(), grad)
        if one.shape != cam.shape:
            one = F.interpolate(one[None, None], size=(height, width), mode="bilinear")[0, 0]
        cam = cam + one
    cam = torch.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(cam.max())
    cam = cam / peak if peak > 0 else torch.zeros_like(cam)
    return cam.numpy().astype(np.float32), logits.detach(), target


def grad_cam(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM of output `target` for one normalised input (1, 3, H, W): (h, w) in [0, 1]."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"grad_cam expects one image (1, 3, H, W), got {tuple(x.shape)}")
    return _cam_and_logits(model, x, target)[0]


def upsample(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a map in [0, 1] to (height, width)."""
    t = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return out[0, 0].clamp(0.0, 1.0).numpy()


def heatmap_on_poster(heatmap: np.ndarray, spec: InputSpec, size: tuple[int, int]) -> np.ndarray:
    """A heatmap over the model's input laid over a poster of `size` (width, height) the way
    `spec` resized the poster: for a squashed poster the map itself (stretching it back is the
    inverse), else a (height, width) map, zero where the model did not see the poster (what a
    crop cut off)."""
    width, height = size
    left, top, right, bottom = input_box(size, spec.width, spec.height, spec.resize)
    if (left, top, right, bottom) == (0, 0, width, height):
        return heatmap
    # Each poster pixel's centre in the input, in grid_sample's [-1, 1] coordinates.
    xs = (torch.arange(width) + 0.5 - left) / (right - left) * 2 - 1
    ys = (torch.arange(height) + 0.5 - top) / (bottom - top) * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).float()  # (H, W, 2)
    t = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32))[None, None]
    out = F.grid_sample(t, grid[None], padding_mode="border", align_corners=False)[0, 0]
    seen = (grid.abs() <= 1).all(dim=-1)
    return torch.where(seen, out, 0.0).clamp(0.0, 1.0).numpy()


def overlay_heatmap(
    image: Image.Image, heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA
) -> Image.Image:
    """The poster with `heatmap` (any size; stretched to the poster's) blended in colour."""
    from matplotlib import colormaps

    poster = image.convert("RGB")
    stretched = upsample(heatmap, poster.height, poster.width)
    colours = colormaps[COLORMAP](stretched)[..., :3]
    heat = Image.fromarray((colours * 255).round().astype(np.uint8), "RGB")
    return Image.blend(poster, heat, alpha)


def _shrunk(image: Image.Image, max_side: int | None) -> Image.Image:
    if max_side is None or max(image.size) <= max_side:
        return image
    small = image.copy()
    small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return small


def explain_poster(
    model: nn.Module,
    card: ModelCard,
    image: Image.Image,
    genre: str | None = None,
    overlay_max_side: int | None = None,
) -> Explanation:
    """Grad-CAM of `genre` (any case; default: the most probable genre) for one poster. The
    model sees the poster as its card resizes it (squash, crop or pad), and the heatmap goes
    back over the same part; the overlay is drawn at most `overlay_max_side` pixels on a side
    (a huge poster's full-size colour map would cost seconds and hundreds of MB)."""
    target = None if genre is None else card.find_genre(genre)
    image = image.convert("RGB")
    pixels = card.input.resize_image(image)
    x = card.input.normalisation.tensor(pixels[None])
    text, text_logits = None, None
    if isinstance(model, TextFusion) and card.text is not None:
        [text] = read_poster_texts([pixels], card.text.ocr)
        with torch.no_grad():
            text_logits = model.text_logits(torch.from_numpy(card.text.features([text])))
    raw, logits, target = _cam_and_logits(model, x, target, text_logits)
    probs = to_probabilities(logits, card.task)
    heatmap = upsample(raw, *pixels.shape[:2])
    shown = _shrunk(image, overlay_max_side)
    return Explanation(
        genre=card.genres[target],
        probability=float(probs[0, target]),
        heatmap=heatmap,
        overlay=overlay_heatmap(shown, heatmap_on_poster(heatmap, card.input, shown.size)),
        raw=raw,
        text=text,
    )
