"""Fixtures for the data-layer tests: tiny images and CSV files written into `tmp_path`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent

import pytest
from PIL import Image

import postergenre.data.cache as cache_module
from postergenre.data.preprocess import load_poster_array

RED = (220, 30, 30)
GREEN = (30, 200, 40)
BLUE = (30, 40, 210)


def _save_image(
    path: Path,
    colour: tuple[int, int, int] = RED,
    size: tuple[int, int] = (6, 9),
    **save_options,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, **save_options)
    return path


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def save_image() -> Callable[..., Path]:
    """`save_image(path, colour=RED, size=(w, h), **pillow_save_options)`: a one-colour image;
    Pillow picks the format from the file extension."""
    return _save_image


@pytest.fixture
def write_text() -> Callable[[Path, str], Path]:
    """`write_text(path, text)`: write dedented text (a CSV, usually), creating folders."""
    return _write_text


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A dataset folder whose `images/` holds tt1.jpg (red), tt2.png (green), tt3.jpg (blue);
    tests write their label CSVs beside `images/`."""
    root = tmp_path / "dataset"
    _save_image(root / "images" / "tt1.jpg", RED)
    _save_image(root / "images" / "tt2.png", GREEN)
    _save_image(root / "images" / "tt3.jpg", BLUE)
    return root


@pytest.fixture
def decoded(monkeypatch):
    """Every path the cache decodes, in order (the real decoder still runs)."""
    calls: list[str] = []

    def counting_load(path, spec):
        calls.append(os.path.basename(path))
        return load_poster_array(path, spec)

    monkeypatch.setattr(cache_module, "load_poster_array", counting_load)
    return calls
