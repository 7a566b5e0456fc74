"""Poster text: stored rows, the cache, and (with the OCR extra) real reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from postergenre.data import text
from postergenre.data.preprocess import InputSpec
from postergenre.data.text import TEXT_BYTES, PosterText, decode_text, encode_text
from tests.conftest import make_poster


def _spec() -> InputSpec:
    from postergenre.models.efficientnet_lite import portrait_input

    return portrait_input("lite0")


def test_rows_round_trip_and_cut_long_text_at_a_character_boundary():
    assert decode_text(encode_text("A TRUE STORY | Noël")) == "A TRUE STORY | Noël"
    long = "é" * TEXT_BYTES  # two bytes each: the cut must not split one
    row = encode_text(long)
    assert row.shape == (TEXT_BYTES,) and decode_text(row) == "é" * (TEXT_BYTES // 2)
    assert decode_text(encode_text("")) == ""


def test_text_is_read_once_per_poster_and_unreadable_files_are_reported(tmp_path, monkeypatch):
    pytest.importorskip("rapidocr_onnxruntime")
    calls: list[int] = []

    def fake_read(pixels: np.ndarray) -> str:
        calls.append(1)
        return f"mean {int(pixels.mean())}"

    monkeypatch.setattr(text, "read_text", fake_read)
    posters = [make_poster(tmp_path / f"p{i}.png", (40 * i, 80, 120), seed=i) for i in range(3)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    reader = PosterText(tmp_path / "cache", _spec())
    texts, errors = reader.load([*posters, broken], workers=1, progress=False)
    assert all(t is not None and t.startswith("mean ") for t in texts[:3]) and texts[3] is None
    assert list(errors) == [3]
    again, _ = PosterText(tmp_path / "cache", _spec()).load(posters, workers=1, progress=False)
    assert again == texts[:3] and len(calls) == 3


def test_missing_ocr_extra_is_a_clear_error(monkeypatch):
    from importlib import metadata

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(text.metadata, "version", missing)
    with pytest.raises(text.OcrUnavailable, match=r"pip install 'postergenre\[ocr\]'"):
        text.ocr_version()


def test_ocr_reads_a_printed_title(tmp_path: Path):
    pytest.importorskip("rapidocr_onnxruntime")
    image = Image.new("RGB", (224, 336), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=36)
    draw.text((20, 140), "MURDER", fill=(0, 0, 0), font=font)
    path = tmp_path / "title.png"
    image.save(path)
    [found], errors = PosterText(tmp_path / "cache", _spec()).load([path], progress=False)
    assert not errors and "MURDER" in found.upper().replace(" ", "")
