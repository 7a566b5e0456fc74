"""Paths the user types: one rule for every command and the Python API."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_an_unknown_user_after_a_tilde_is_one_line_naming_the_user():
    from postergenre.errors import UserError

    with pytest.raises(UserError, match=r"^no user 'nosuchuser' for ~nosuchuser/posters/a\.jpg$"):
        user_path("~nosuchuser/posters/a.jpg")


@pytest.mark.parametrize("kind", ["posters", "labels", "folder", "images", "splits", "model"])
def test_every_path_argument_refuses_an_unknown_user_in_one_line(dataset_dir, kind):
    from postergenre.data.labels import load_posters
    from postergenre.data.sources import find_posters
    from postergenre.errors import UserError
    from postergenre.models.catalog import resolve_model

    typed = "~nosuchuser/x"
    calls = {
        "posters": lambda: find_posters(typed),
        "labels": lambda: load_posters(labels=typed),
        "folder": lambda: load_posters(folder=typed),
        "images": lambda: load_posters(labels=dataset_dir / "labels.csv", images=typed),
        "splits": lambda: load_posters(labels=dataset_dir / "labels.csv", splits=typed),
        "model": lambda: resolve_model(typed),
    }
    with pytest.raises(UserError, match="no user 'nosuchuser'"):
        calls[kind]()


@pytest.fixture
def dataset_dir(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (6, 9)).save(tmp_path / "images" / "tt1.jpg")
    (tmp_path / "labels.csv").write_text("id,genre\ntt1,Drama\n")
    return tmp_path
