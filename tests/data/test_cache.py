"""The decode-once poster cache: what it returns, what it skips, and what survives a restart."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PIL import Image

from postergenre.data.cache import PosterCache, default_cache_dir
from postergenre.data.preprocess import SYMMETRIC_RANGE, UNIT_RANGE, InputSpec, load_poster_array
from postergenre.data.store import ArrayStore
from postergenre.errors import UserError

WIDTH, HEIGHT = 4, 6
SPEC = InputSpec(WIDTH, HEIGHT, "squash", UNIT_RANGE)


@pytest.fixture
def files(tmp_path, save_image):
    """Three small posters of different colours and sizes."""
    return [
        save_image(tmp_path / "posters" / "a.png", (200, 0, 0), size=(8, 12)),
        save_image(tmp_path / "posters" / "b.png", (0, 200, 0), size=(10, 10)),
        save_image(tmp_path / "posters" / "c.jpg", (0, 0, 200), size=(6, 9)),
    ]


def replace_content(path, save_image, colour):
    """Rewrite a file with new pixels and move its mtime on, as an editor or a download would."""
    before = path.stat().st_mtime_ns
    save_image(path, colour, size=(8, 12))
    os.utime(path, ns=(before + 5_000_000_000, before + 5_000_000_000))


def test_load_returns_the_decoded_pixels(tmp_path, files):
    cache = PosterCache(tmp_path / "cache", SPEC)

    cached = cache.load(files, progress=False)

    assert cached.rows.shape == (3,) and cached.errors == {}
    assert list(cached.ok) == [0, 1, 2]
    for i, path in enumerate(files):
        expected = load_poster_array(path, SPEC)
        assert np.array_equal(cached[i], expected)
        assert np.array_equal(cached.data[cached.rows[i]], expected)
    assert cached[np.array([2, 0])].shape == (2, HEIGHT, WIDTH, 3)


def test_second_load_decodes_nothing(tmp_path, files, decoded):
    cache = PosterCache(tmp_path / "cache", SPEC)
    first = cache.load(files, workers=1, progress=False)
    assert decoded == ["a.png", "b.png", "c.jpg"]

    decoded.clear()
    second = cache.load(files, workers=1, progress=False)

    assert decoded == []
    assert np.array_equal(second[np.arange(3)], first[np.arange(3)])


def test_a_changed_file_is_decoded_again_alone(tmp_path, files, decoded, save_image):
    cache = PosterCache(tmp_path / "cache", SPEC)
    old = cache.load(files, workers=1, progress=False)
    replace_content(files[0], save_image, (0, 0, 0))

    decoded.clear()
    new = cache.load(files, workers=1, progress=False)

    assert decoded == ["a.png"]
    assert (new[0] == 0).all() and not (old[0] == 0).all()
    assert np.array_equal(new[1], old[1]) and np.array_equal(new[2], old[2])


def test_bad_files_are_reported_and_their_failure_is_cached(tmp_path, files, decoded):
    empty = tmp_path / "posters" / "empty.jpg"
    empty.write_bytes(b"")
    paths = [files[0], empty, files[1]]
    cache = PosterCache(tmp_path / "cache", SPEC)

    first = cache.load(paths, workers=1, progress=False)

    assert list(first.ok) == [0, 2]
    assert first.rows[1] == -1
    assert set(first.errors) == {1} and "empty file (0 bytes)" in first.errors[1]

    decoded.clear()
    second = cache.load(paths, workers=1, progress=False)

    assert decoded == []  # the failure is remembered, not retried
    assert second.errors == first.errors


def test_a_missing_file_is_an_error_not_a_crash(tmp_path, files):
    cache = PosterCache(tmp_path / "cache", SPEC)

    cached = cache.load([files[0], tmp_path / "gone.png"], progress=False)

    assert list(cached.ok) == [0]
    assert "cannot read file" in cached.errors[1] and "gone.png" in cached.errors[1]


def test_a_new_cache_object_sees_rows_stored_by_an_earlier_one(tmp_path, files, decoded):
    first = PosterCache(tmp_path / "cache", SPEC).load(files, workers=1, progress=False)

    decoded.clear()
    again = PosterCache(tmp_path / "cache", SPEC).load(files, workers=1, progress=False)

    assert decoded == []
    assert np.array_equal(again[np.arange(3)], first[np.arange(3)])


def test_each_size_and_resize_mode_has_its_own_folder(tmp_path, files, decoded):
    PosterCache(tmp_path / "cache", SPEC).load(files[:1], workers=1, progress=False)

    decoded.clear()
    cropped = PosterCache(tmp_path / "cache", InputSpec(5, 5, "crop", UNIT_RANGE))
    cached = cropped.load(files[:1], workers=1, progress=False)

    assert decoded == ["a.png"]
    assert cached[0].shape == (5, 5, 3)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "posters-4x6-squash",
        "posters-5x5-crop",
    ]


def test_the_folder_is_named_by_size_resize_and_interpolation_only(tmp_path, files, decoded):
    # The names caches had before the spec was passed whole: old caches stay valid, and two
    # models that differ only in normalisation share decoded pixels.
    PosterCache(tmp_path / "cache", SPEC).load(files[:1], workers=1, progress=False)
    decoded.clear()
    symmetric = InputSpec(WIDTH, HEIGHT, "squash", SYMMETRIC_RANGE)
    PosterCache(tmp_path / "cache", symmetric).load(files[:1], workers=1, progress=False)
    assert decoded == []
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["posters-4x6-squash"]
    bicubic = InputSpec(WIDTH, HEIGHT, "pad", UNIT_RANGE, "bicubic")
    folder = PosterCache(tmp_path / "cache", bicubic).store.directory
    assert folder.name == "posters-4x6-pad-bicubic"


def test_a_partial_row_left_by_a_crash_is_dropped_on_the_next_append(tmp_path, files, save_image):
    cache = PosterCache(tmp_path / "cache", SPEC)
    cache.load(files[:2], progress=False)
    rows_bin = cache.store.directory / "rows.bin"
    row_bytes = HEIGHT * WIDTH * 3
    with open(rows_bin, "ab") as data:  # a crash halfway through writing a row
        data.write(b"\x07" * 5)

    cached = cache.load(files, progress=False)  # files[2] is new, so a row is appended

    assert rows_bin.stat().st_size == 3 * row_bytes
    for i, path in enumerate(files):
        assert np.array_equal(cached[i], load_poster_array(path, SPEC))


def test_array_store_refuses_a_folder_holding_another_row_shape(tmp_path):
    ArrayStore(tmp_path / "store", (2, 2, 3), "uint8")
    ArrayStore(tmp_path / "store", (2, 2, 3), "uint8")  # the same shape reopens fine

    with pytest.raises(UserError, match="another shape"):
        ArrayStore(tmp_path / "store", (3, 3, 3), "uint8")


def test_array_store_round_trip(tmp_path):
    store = ArrayStore(tmp_path / "store", (2,), "float32")

    # Items are (key, row, error): a failure is stored as an error with no row.
    store.append([("a", np.array([1.0, 2.0]), None), ("bad", None, "unreadable")])
    store.append([("b", np.ones(2), None)])
    found = store.lookup(["a", "b", "bad", "unknown"])

    assert found == {"a": (0, None), "b": (1, None), "bad": (-1, "unreadable")}
    assert np.array_equal(store.rows(), [[1.0, 2.0], [1.0, 1.0]])


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTERGENRE_CACHE", str(tmp_path / "my-cache"))
    assert default_cache_dir() == tmp_path / "my-cache"

    monkeypatch.delenv("POSTERGENRE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "postergenre"


def test_cache_dir_none_uses_the_default(monkeypatch, tmp_path, files):
    monkeypatch.setenv("POSTERGENRE_CACHE", str(tmp_path / "env-cache"))

    PosterCache(None, SPEC).load(files[:1], progress=False)

    assert (tmp_path / "env-cache" / "posters-4x6-squash" / "rows.bin").is_file()


@pytest.mark.parametrize("how", ["rewritten-in-place", "renamed-over"])
def test_a_poster_replaced_by_one_of_the_same_size_and_mtime_is_decoded_again(tmp_path, how):
    # BMPs of one size have the same byte count whatever their pixels.
    poster = tmp_path / "same.bmp"
    Image.new("RGB", (8, 12), (200, 0, 0)).save(poster)
    stat = poster.stat()
    cache = PosterCache(tmp_path / "cache", SPEC)
    assert (cache.load([poster], progress=False)[0][..., 0] > 150).all()
    time.sleep(0.02)  # the clock the kernel stamps change times with is coarse
    other = tmp_path / "other.bmp"
    Image.new("RGB", (8, 12), (0, 0, 200)).save(other)
    if how == "renamed-over":
        os.replace(other, poster)
    else:
        poster.write_bytes(other.read_bytes())
    os.utime(poster, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` or rsync leave it
    assert (poster.stat().st_size, poster.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)

    again = cache.load([poster], progress=False)

    assert (again[0][..., 2] > 150).all() and (again[0][..., 0] < 50).all()
