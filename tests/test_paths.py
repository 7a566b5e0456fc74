"""Paths the user types: one rule for every command and the Python API."""

from __future__ import annotations

from pathlib import Path

from postergenre.paths import user_path
from tests.conftest import make_seed_bundle


def test_user_path_expands_the_home_folder_and_leaves_other_paths_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_path("~/posters/a.jpg") == tmp_path / "posters" / "a.jpg"
    assert user_path(Path("~")) == tmp_path
    assert user_path("posters/~a.jpg") == Path("posters/~a.jpg")
    assert user_path("/data/a.jpg") == Path("/data/a.jpg")


def test_the_model_catalog_and_the_cache_folder_expand_the_home_folder(tmp_path, monkeypatch):
    from postergenre.data.cache import CACHE_ENV, default_cache_dir
    from postergenre.models.catalog import resolve_model

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(CACHE_ENV, "~/cache")
    assert default_cache_dir() == tmp_path / "cache"
    make_seed_bundle(tmp_path / "bundle")
    assert resolve_model("~/bundle") == tmp_path / "bundle"
