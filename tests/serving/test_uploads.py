"""Decoding uploaded bytes with the same safety rules as poster files."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image
from starlette.datastructures import UploadFile

from postergenre.errors import PosterDecodeError
from postergenre.serving.uploads import (
    EmptyUploadError,
    UploadDecoder,
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


def test_several_uploads_share_one_limit():
    decoder = UploadDecoder(max_upload_bytes=100, max_pixels=10_000)
    datas = asyncio.run(decoder.read_all([_upload(b"a" * 60), _upload(b"b" * 40)]))
    assert datas == [b"a" * 60, b"b" * 40]
    together = r"^2 posters together are larger than the 100 B limit$"
    with pytest.raises(UploadTooLargeError, match=together):
        asyncio.run(decoder.read_all([_upload(b"a" * 60), _upload(b"b" * 41)]))
    with pytest.raises(UploadTooLargeError, match=r"^one\.png: larger than the 100 B limit$"):
        asyncio.run(decoder.read_all([_upload(b"a" * 101, "one.png")]))


def test_decodes_run_at_most_concurrency_at_once():
    decoder = UploadDecoder(max_upload_bytes=10_000, max_pixels=10_000, concurrency=2)
    poster = _encode(Image.new("RGB", (6, 9), (200, 30, 30)), "PNG")
    running, most = 0, 0
    lock = threading.Lock()

    def preprocess(image: Image.Image) -> np.ndarray:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return np.asarray(image)

    async def decode_all() -> list[np.ndarray]:
        return await asyncio.gather(
            *(decoder.pixels(poster, f"{i}.png", preprocess) for i in range(6))
        )

    arrays = asyncio.run(decode_all())
    assert [a.shape for a in arrays] == [(9, 6, 3)] * 6
    assert most == 2
    with pytest.raises(PosterDecodeError, match="too big"):
        asyncio.run(UploadDecoder(10_000, max_pixels=10).pixels(poster, "too big.png", preprocess))


def test_small_decodes_go_ahead_while_large_ones_hold_their_lane():
    # Images over `large_pixels` decode one at a time in their own lane: however many are in
    # flight, the small ones never queue behind them.
    decoder = UploadDecoder(10_000, max_pixels=100_000, concurrency=2, large_pixels=1_000)
    large, small = (
        _encode(Image.new("RGB", (60, 40)), "PNG"),
        _encode(Image.new("RGB", (8, 8)), "PNG"),
    )
    release = threading.Event()
    lock = threading.Lock()
    large_running, most_large = 0, 0

    def preprocess(image: Image.Image) -> np.ndarray:
        nonlocal large_running, most_large
        if image.width * image.height > 1_000:
            with lock:
                large_running += 1
                most_large = max(most_large, large_running)
            release.wait(10)  # held until every small decode is done
            with lock:
                large_running -= 1
        return np.asarray(image)

    async def scenario() -> tuple[list[np.ndarray], bool]:
        larges = [
            asyncio.ensure_future(decoder.pixels(large, f"l{i}.png", preprocess)) for i in range(4)
        ]
        await asyncio.sleep(0.05)  # the large ones are in first
        smalls = [decoder.pixels(small, f"s{i}.png", preprocess) for i in range(6)]
        try:
            done = await asyncio.wait_for(asyncio.gather(*smalls), 5)
        finally:
            release.set()
        still_waiting = not all(task.done() for task in larges)
        await asyncio.gather(*larges)
        return done, still_waiting

    done, still_waiting = asyncio.run(scenario())
    assert [a.shape for a in done] == [(8, 8, 3)] * 6
    assert still_waiting  # the small decodes finished while large ones were held
    assert most_large == 1


def test_large_jpegs_are_decoded_reduced_small_ones_whole():
    decoder = UploadDecoder(10_000_000, max_pixels=10_000_000, large_pixels=100_000, fit=(16, 24))
    big = _encode(Image.new("RGB", (640, 960), (10, 200, 30)), "JPEG")  # 614 kP: large
    image = asyncio.run(decoder.image(_upload(big, "big.jpg")))
    # reduced (DCT scaling), keeping the poster's shape and at least twice `fit` on each side
    assert image.size == (80, 120) and image.mode == "RGB"
    assert image.getpixel((40, 60))[1] > 180
    small = _encode(Image.new("RGB", (60, 90)), "JPEG")  # under 4x the input: decoded whole
    assert asyncio.run(decoder.image(_upload(small, "small.jpg"))).size == (60, 90)
    # The pixel limit applies to the poster as uploaded, not as reduced.
    with pytest.raises(PosterDecodeError, match="640x960 pixels is over the limit"):
        asyncio.run(UploadDecoder(10_000_000, 500_000, fit=(16, 24)).image(_upload(big)))
