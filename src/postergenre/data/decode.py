"""Turn a poster file into an RGB image safely, whatever the file holds."""

from __future__ import annotations

import stat
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from postergenre.errors import PosterDecodeError
from postergenre.paths import shown, unreadable_reason

# Posters are at most a few megapixels; anything far larger is a decompression bomb or a mistake.
MAX_PIXELS = 40_000_000
RESIZE_MODES = ("squash", "crop", "pad")
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit grayscale: scale to 8 bits rather than clip.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def _reduction(size: tuple[int, int], fit: tuple[int, int] | None) -> int:
    """How many times smaller a poster of `size` may be decoded and still be at least twice
    `fit` on both sides, whichever way its EXIF orientation turns it: 1 (full size) below four
    times, so every poster of ordinary size decodes bit for bit as it always did."""
    if fit is None:
        return 1
    factor = min(size) // (2 * max(fit))
    return factor if factor >= 2 else 1


def _reduced(image: Image.Image, fit: tuple[int, int] | None) -> Image.Image:
    """`image` box-averaged down by `_reduction` (for the modes Pillow can reduce)."""
    factor = _reduction(image.size, fit)
    if factor == 1 or image.mode not in ("RGB", "RGBA", "L", "LA"):
        return image
    return image.reduce(factor)


# Only the common raster formats: Pillow's other plugins (EPS runs Ghostscript, for one) have
# no business touching a poster file or an upload.
POSTER_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")


def open_poster(
    source: str | Path | IO[bytes],
    name: str,
    max_pixels: int = MAX_PIXELS,
    *,
    fit: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode a file path or a binary stream as an RGB poster: EXIF orientation applied, first
    frame of an animation, at most `max_pixels`. `name` is used in error messages.

    With `fit` (the model input's width and height), a poster at least four times larger is
    decoded reduced, to no less than twice `fit` (memory: a 36-megapixel JPEG needs about a
    64th of its full size): JPEGs by libjpeg's scaled decoding, other formats right after
    loading. Every reader of poster files passes it.

    Raises `PosterDecodeError` with a human-readable reason for truncated, corrupt, oversized
    or non-image data.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=POSTER_FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise PosterDecodeError(
                        f"{name}: {width}x{height} pixels is over the limit of {max_pixels:,} "
                        "(possible decompression bomb)"
                    )
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                factor = _reduction(image.size, fit)
                if image.format == "JPEG" and fit is not None and factor > 1:
                    image.draft("RGB", (2 * max(fit),) * 2)
                image.load()
                image = _reduced(image, fit)  # before the full-size copies below
                image = ImageOps.exif_transpose(image) or image
                rgb = _reduced(_to_rgb(image), fit)
                rgb.load()
                return rgb
    except PosterDecodeError:
        raise
    except UnidentifiedImageError as exc:
        accepted = ", ".join(POSTER_FORMATS)
        raise PosterDecodeError(f"{name}: not an image (accepted formats: {accepted})") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PosterDecodeError(f"{name}: too many pixels (possible decompression bomb)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        raise PosterDecodeError(f"{name}: corrupt or truncated image ({reason})") from exc


def decode_poster(
    path: str | Path, max_pixels: int = MAX_PIXELS, *, fit: tuple[int, int] | None = None
) -> Image.Image:
    """Open a poster file as an RGB image, reduced when much larger than `fit` needs (see
    `open_poster`).

    Raises `PosterDecodeError` with a human-readable reason for zero-byte, truncated, corrupt,
    oversized or non-image files, directories and missing files.
    """
    path = Path(path)
    try:
        info = path.stat()
    except (OSError, ValueError) as exc:  # missing, a link loop, a name too long, a NUL byte
        raise PosterDecodeError(f"{shown(path)}: {unreadable_reason(path, exc)}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise PosterDecodeError(f"{path}: is a directory, not an image")
    if info.st_size == 0:
        raise PosterDecodeError(f"{path}: empty file (0 bytes)")
    return open_poster(path, str(path), max_pixels, fit=fit)


def resize_poster(
    image: Image.Image,
    width: int,
    height: int,
    mode: str = "squash",
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Resize to exactly `width` x `height` and return a uint8 (height, width, 3) array.

    squash: stretch to the target (posters are ~2:3, so a 2:3 target barely distorts);
    crop: centre-crop to the target's aspect first; pad: letterbox on black.
    """
    try:
        resample = INTERPOLATIONS[interpolation]
    except KeyError:
        raise ValueError(
            f"unknown interpolation {interpolation!r}; expected one of {tuple(INTERPOLATIONS)}"
        ) from None
    if mode == "squash":
        out = image.resize((width, height), resample, reducing_gap=None)
    elif mode == "crop":
        out = ImageOps.fit(image, (width, height), resample)
    elif mode == "pad":
        out = ImageOps.pad(image, (width, height), resample, color=(0, 0, 0))
    else:
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")
    return np.asarray(out, dtype=np.uint8)


def input_box(
    size: tuple[int, int], width: int, height: int, mode: str = "squash"
) -> tuple[float, float, float, float]:
    """The rectangle (left, top, right, bottom), in the pixels of a poster of `size` (width,
    height), that `resize_poster` turns into the `width` x `height` input: the whole poster
    (squash), its centre (crop), or more than the poster, reaching into the padding (pad).
    It mirrors Pillow's `ImageOps.fit` and `ImageOps.pad`, so a map over the input can be
    laid back over the poster (Grad-CAM)."""
    w, h = size
    poster_ratio, input_ratio = w / h, width / height
    if mode == "squash" or poster_ratio == input_ratio:
        return (0.0, 0.0, float(w), float(h))
    if mode == "crop":
        if poster_ratio > input_ratio:
            crop_w, crop_h = input_ratio * h, float(h)
        else:
            crop_w, crop_h = float(w), w / input_ratio
        left, top = (w - crop_w) / 2, (h - crop_h) / 2
        return (left, top, left + crop_w, top + crop_h)
    if mode == "pad":
        # The poster is resized to fit inside (Pillow rounds its size), then centred.
        inner_w, inner_h = width, height
        if poster_ratio > input_ratio:
            inner_h = round(h / w * width)
        else:
            inner_w = round(w / h * height)
        x, y = round((width - inner_w) / 2), round((height - inner_h) / 2)
        scale_x, scale_y = w / inner_w, h / inner_h
        return (-x * scale_x, -y * scale_y, (width - x) * scale_x, (height - y) * scale_y)
    raise ValueError(f"unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")
