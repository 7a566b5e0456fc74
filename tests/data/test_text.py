"""Poster text: stored rows, the cache, and (with the OCR extra) real reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from postergenre.data import text
from postergenre.data.preprocess import InputSpec
from postergenre.data.text import (
    DEFAULT_OCR,
    TEXT_BYTES,
    OcrSetting,
    PosterText,
    decode_text,
    encode_text,
    read_text,
)
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

    def fake_read(pixels: np.ndarray, ocr: OcrSetting = DEFAULT_OCR) -> str:
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


def test_missing_ocr_extra_is_a_clear_error(extras_missing):
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


def test_the_ocr_setting_is_part_of_the_cache_key(tmp_path, monkeypatch):
    pytest.importorskip("rapidocr_onnxruntime")
    read_with: list[OcrSetting] = []

    def fake_read(pixels: np.ndarray, ocr: OcrSetting = DEFAULT_OCR) -> str:
        read_with.append(ocr)
        return f"side {ocr.det_side} top {ocr.max_boxes}"

    monkeypatch.setattr(text, "read_text", fake_read)
    poster = make_poster(tmp_path / "p.png", (90, 80, 120), seed=1)
    cache = tmp_path / "cache"
    old, fast, top = DEFAULT_OCR, OcrSetting(320), OcrSetting(320, 4)
    found = {
        s: PosterText(cache, _spec(), s).load([poster], workers=1)[0][0] for s in (old, fast, top)
    }
    assert found == {old: "side 736 top 0", fast: "side 320 top 0", top: "side 320 top 4"}
    assert read_with == [old, fast, top]  # each setting read the poster itself
    folders = sorted(p.name for p in cache.iterdir())
    # the first text model's folder keeps its name, so texts it cached stay valid
    assert folders[0].endswith("-bilinear") and folders[1:] == [
        folders[0] + "-det320", folders[0] + "-det320-top4"]  # fmt: skip
    again = PosterText(cache, _spec(), fast).load([poster], workers=1)[0][0]
    assert again == "side 320 top 0" and len(read_with) == 3  # from the cache


def _printed(lines: list[tuple[str, int, int]]) -> np.ndarray:
    """A white 224 x 336 poster with `lines` of (text, top, font size) in black."""
    image = Image.new("RGB", (224, 336), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for line, top, size in lines:
        draw.text((12, top), line, fill=(0, 0, 0), font=ImageFont.load_default(size=size))
    return np.asarray(image)


def test_ocr_settings_read_the_largest_text_first_and_the_defaults_match_rapidocr():
    pytest.importorskip("rapidocr_onnxruntime")
    pixels = _printed([("small print", 30, 14), ("MURDER", 140, 40), ("tiny credit", 290, 14)])
    everything = read_text(pixels)
    engine = text._engine(DEFAULT_OCR.det_side)  # rapidocr's own call, as the first model read
    result, _ = engine(np.ascontiguousarray(pixels[..., ::-1]), use_cls=False)
    lines = [str(t).strip() for _, t, score in result if float(score) >= text.MIN_SCORE]
    assert everything == text.SEPARATOR.join(lines) and len(lines) == 3
    largest = read_text(pixels, OcrSetting(320, max_boxes=1))
    assert largest.upper().replace(" ", "") == "MURDER"
    assert read_text(np.full((336, 224, 3), 250, np.uint8), OcrSetting(320)) == ""
