"""Decoding uploaded bytes with the same safety rules as poster files."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image
from starlette.datastructures import UploadFile

from postergenre.errors import PosterDecodeError
from postergenre.serving.uploads import (
    EmptyUploadError,
    UploadTooLargeError,
    decode_poster_bytes,
    read_upload,
)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_common_formats_decode_to_rgb(fmt):
    image = decode_poster_bytes(_encode(Image.new("RGB", (6, 9), (200, 30, 30)), fmt), "p")
    assert image.mode == "RGB" and image.size == (6, 9)


def test_transparency_goes_white_and_exif_orientation_applies():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert decode_poster_bytes(_encode(rgba, "PNG"), "t.png").getpixel((0, 0)) == (255, 255, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    rotated = _encode(Image.new("RGB", (6, 9)), "JPEG", exif=exif)
    assert decode_poster_bytes(rotated, "r.jpg").size == (9, 6)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (5, 5), c) for c in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    assert decode_poster_bytes(out.getvalue(), "a.gif").getpixel((2, 2))[0] > 200


def test_bad_bytes_raise_readable_errors():
    with pytest.raises(EmptyUploadError, match=r"e\.png: empty"):
        decode_poster_bytes(b"", "e.png")
    with pytest.raises(PosterDecodeError, match=r"x\.txt: not an image"):
        decode_poster_bytes(b"hello", "x.txt")
    jpeg = _encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(PosterDecodeError, match="truncated"):
        decode_poster_bytes(jpeg[: len(jpeg) // 2], "cut.jpg")
    big = _encode(Image.new("L", (300, 300)), "PNG")
    with pytest.raises(PosterDecodeError, match="decompression bomb"):
        decode_poster_bytes(big, "big.png", max_pixels=10_000)


def _upload(data: bytes, name: str = "p.png") -> UploadFile:
    return UploadFile(io.BytesIO(data), filename=name)


def test_an_upload_over_the_limit_names_the_limit_in_si_units():
    with pytest.raises(UploadTooLargeError, match=r"^big\.jpg: larger than the 65\.5 kB limit$"):
        asyncio.run(read_upload(_upload(b"x" * (64 * 1024 + 1), "big.jpg"), 64 * 1024))
    with pytest.raises(UploadTooLargeError, match=r"the 10\.5 MB limit$"):
        asyncio.run(read_upload(_upload(b"x" * (10 * 1024 * 1024 + 1)), 10 * 1024 * 1024))
    with pytest.raises(UploadTooLargeError, match=r"the 12 B limit$"):
        asyncio.run(read_upload(_upload(b"x" * 13), 12))
    assert asyncio.run(read_upload(_upload(b"x" * 12), 12)) == b"x" * 12  # at the limit: fine
