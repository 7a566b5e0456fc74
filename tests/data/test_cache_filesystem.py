"""Filesystem surprises in the cache path: a cache that cannot be created, locked or written is
skipped with one warning line and the rows computed without it; the cache commands refuse in
one line or report a damaged folder, never with a traceback.

Tests run as root, whom permission bits do not stop, so read-only and full disks are simulated
by making the os-level call fail the way the kernel would."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import postergenre.data.cache as cache_module
import postergenre.data.store as store_module
from postergenre.cli import main
from postergenre.data.cache import PosterCache, fill_store
from postergenre.data.cache_admin import cache_info, clear_cache, prune_cache
from postergenre.data.preprocess import UNIT_RANGE, InputSpec, load_poster_array
from postergenre.data.store import ArrayStore
from postergenre.data.store_folder import CacheUnavailable
from postergenre.errors import UserError
from tests.conftest import make_poster

WIDTH, HEIGHT = 4, 6
SPEC = InputSpec(WIDTH, HEIGHT, "squash", UNIT_RANGE)
FOLDER = f"posters-{WIDTH}x{HEIGHT}-squash"


@pytest.fixture
def posters(tmp_path) -> list[Path]:
    return [make_poster(tmp_path / "p" / f"{i}.png", (60 * i, 90, 30), seed=i) for i in range(3)]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    """Each test sees the one warning a process gives per unusable cache root."""
    monkeypatch.setattr(cache_module, "_WARNED", set())


def _expected(paths: list[Path]) -> np.ndarray:
    return np.stack([load_poster_array(p, SPEC) for p in paths])


def _load_uncached(cache_dir: Path, paths: list[Path], capsys) -> str:
    """Load `paths` twice through a cache at `cache_dir` that cannot be used; the pixels must
    be right both times. Returns the one line written on stderr."""
    for _ in range(2):
        cached = PosterCache(cache_dir, SPEC).load(paths, progress=False)
        assert not cached.errors
        np.testing.assert_array_equal(cached[np.arange(len(paths))], _expected(paths))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("warning: ") and "continuing without it" in lines[0], lines
    return lines[0]


def _failing(error: int) -> Callable[..., None]:
    def fail(*args, **kwargs) -> None:
        raise OSError(error, os.strerror(error))

    return fail


def _dir_in_place_of(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / name).unlink(missing_ok=True)
        (folder / name).mkdir()

    return damage


@pytest.mark.parametrize(
    "make_root",
    [
        lambda tmp: (tmp / "cache").write_text("a file, not a folder") and tmp / "cache",
        lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "cache",
        lambda tmp: (tmp / "loop").symlink_to(tmp / "loop") or tmp / "loop",
    ],
    ids=["root-is-a-file", "root-under-a-file", "symlink-loop"],
)
def test_a_cache_root_that_cannot_be_a_folder_is_skipped_with_one_warning(
    tmp_path, posters, capsys, make_root
):
    root = make_root(tmp_path)
    line = _load_uncached(root, posters, capsys)
    assert str(root) in line


@pytest.mark.parametrize("error", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_a_cache_folder_that_cannot_be_created_is_skipped(
    tmp_path, posters, capsys, monkeypatch, error
):
    monkeypatch.setattr(store_module.Path, "mkdir", _failing(error))
    line = _load_uncached(tmp_path / "cache", posters, capsys)
    assert os.strerror(error) in line


@pytest.mark.parametrize("name", ["lock", "work.lock", "rows.bin", "index.sqlite", "store.json"])
def test_a_store_file_that_is_a_folder_is_skipped(tmp_path, posters, capsys, name):
    PosterCache(tmp_path / "cache", SPEC).load(posters[:1], progress=False)
    _dir_in_place_of(name)(tmp_path / "cache" / FOLDER)
    _load_uncached(tmp_path / "cache", posters, capsys)


def test_a_full_disk_while_rows_are_written_is_skipped(tmp_path, posters, capsys, monkeypatch):
    PosterCache(tmp_path / "cache", SPEC).load(posters[:1], progress=False)
    monkeypatch.setattr(store_module.os, "fsync", _failing(errno.ENOSPC))
    line = _load_uncached(tmp_path / "cache", posters, capsys)
    assert "No space left on device" in line


def test_a_read_only_index_is_skipped(tmp_path, posters, capsys, monkeypatch):
    PosterCache(tmp_path / "cache", SPEC).load(posters[:1], progress=False)
    real_connect = sqlite3.connect

    def read_only(path, *args, **kwargs):
        return real_connect(f"{Path(path).resolve().as_uri()}?mode=ro", *args, uri=True, timeout=1)

    monkeypatch.setattr(store_module.sqlite3, "connect", read_only)
    _load_uncached(tmp_path / "cache", posters, capsys)


def test_the_store_refuses_in_one_line_where_no_fallback_is_wanted(tmp_path):
    (tmp_path / "cache").write_text("x")
    store = ArrayStore(tmp_path / "cache" / FOLDER, (HEIGHT, WIDTH, 3), "uint8")
    assert isinstance(store.unusable, CacheUnavailable)
    with pytest.raises(UserError, match="not usable") as raised:
        store.lookup(["a"])
    assert "\n" not in raised.value.one_line()


def test_without_a_cache_memory_stays_bounded(tmp_path, posters, monkeypatch):
    (tmp_path / "cache").write_text("x")
    monkeypatch.setattr(cache_module, "UNCACHED_MAX_BYTES", 2 * WIDTH * HEIGHT * 3)
    cache = PosterCache(tmp_path / "cache", SPEC)
    with pytest.raises(UserError, match="use a writable cache folder"):
        cache.load(posters, progress=False)


def test_fill_store_without_a_store_still_reports_each_failure(tmp_path, posters):
    (tmp_path / "cache").write_text("x")
    store = ArrayStore(tmp_path / "cache" / "text-x", (2,), "uint8")

    def compute(indices):
        for i in indices:
            yield (i, None, "unreadable") if i == 1 else (i, np.full(2, i, np.uint8), None)

    cached = fill_store(store, [*posters, tmp_path / "gone.png"], compute)

    assert list(cached.rows >= 0) == [True, False, True, False]
    assert cached.errors[1] == "unreadable" and "cannot read file" in cached.errors[3]
    assert cached[0].tolist() == [0, 0] and cached[2].tolist() == [2, 2]


# -- the cache commands ---------------------------------------------------------------------


def _cli(capsys, *argv: str) -> tuple[int, str, list[str]]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


@pytest.mark.parametrize("action", ["info", "prune", "clear"])
def test_cache_commands_refuse_a_root_that_is_a_file_in_one_line(tmp_path, capsys, action):
    (tmp_path / "cache").write_text("x")
    code, out, err = _cli(capsys, "cache", action, "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and out == ""
    assert len(err) == 1 and err[0].startswith(f"postergenre cache: error: cache folder {tmp_path}")


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: (folder / "index.sqlite").write_bytes(b"this is not a database" * 100),
        lambda folder: (folder / "store.json").write_text("{garbage"),
        lambda folder: (folder / "store.json").write_text('{"row_shape": "x", "dtype": 5}'),
        _dir_in_place_of("rows.bin"),
        _dir_in_place_of("index.sqlite"),
        _dir_in_place_of("store.json"),
        _dir_in_place_of("lock"),
    ],
    ids=["index", "spec", "spec-values", "rows-dir", "index-dir", "spec-dir", "lock-dir"],
)
def test_info_and_prune_report_a_damaged_store_and_leave_it_alone(
    tmp_path, posters, capsys, damage
):
    cache = tmp_path / "cache"
    PosterCache(cache, SPEC).load(posters, progress=False)
    damage(cache / FOLDER)
    before = sorted(p.name for p in (cache / FOLDER).iterdir())

    info = cache_info(cache)
    assert [f.damaged != "" for f in info.folders] == [True]
    code, out, err = _cli(capsys, "cache", "info", "--cache-dir", str(cache))
    assert code == 0 and err == [] and f"{FOLDER} is damaged" in out

    assert list(prune_cache(cache).damaged) == [FOLDER]
    code, out, err = _cli(capsys, "cache", "prune", "--cache-dir", str(cache))
    assert code == 0 and err == [] and f"left {FOLDER} alone: damaged" in out
    assert sorted(p.name for p in (cache / FOLDER).iterdir()) == before


def test_clear_refuses_a_store_holding_a_folder_in_one_line(tmp_path, posters, capsys):
    cache = tmp_path / "cache"
    PosterCache(cache, SPEC).load(posters, progress=False)
    _dir_in_place_of("rows.bin")(cache / FOLDER)
    with pytest.raises(UserError, match="does not look like a postergenre cache"):
        clear_cache(cache)
    code, _, err = _cli(capsys, "cache", "clear", "--cache-dir", str(cache))
    assert code == 2 and len(err) == 1


def test_prune_that_cannot_write_refuses_in_one_line(tmp_path, posters, capsys, monkeypatch):
    cache = tmp_path / "cache"
    PosterCache(cache, SPEC).load(posters, progress=False)
    posters[0].unlink()  # something to prune
    monkeypatch.setattr(store_module.os, "fsync", _failing(errno.EROFS))
    code, _, err = _cli(capsys, "cache", "prune", "--cache-dir", str(cache))
    assert code == 2 and len(err) == 1, err
    assert "Read-only file system" in err[0]


# -- predicting through the command line ----------------------------------------------------


@pytest.fixture(scope="module")
def seed_model(tmp_path_factory) -> Path:
    from tests.conftest import make_seed_bundle

    return make_seed_bundle(tmp_path_factory.mktemp("seed") / "model")


@pytest.mark.parametrize("trouble", ["root-is-a-file", "read-only", "lock-dir"])
def test_predict_with_an_unusable_cache_warns_once_and_predicts(
    tmp_path, posters, seed_model, capsys, monkeypatch, trouble
):
    cache = tmp_path / "cache"
    # a folder: a poster named alone is never cached
    argv = ["predict", str(posters[0].parent), "--model", str(seed_model), "--runtime", "torch"]
    assert main([*argv, "--out", str(tmp_path / "plain.csv")]) == 0
    plain = capsys.readouterr().err.splitlines()
    if trouble == "root-is-a-file":
        cache.write_text("x")
    elif trouble == "read-only":
        real_mkdir = Path.mkdir

        def mkdir(path: Path, *args, **kwargs) -> None:
            if path.is_relative_to(cache):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    else:
        (cache / "posters-150x150-squash" / "lock").mkdir(parents=True)

    out = tmp_path / "cached.csv"
    code = main([*argv, "--out", str(out), "--cache", "--cache-dir", str(cache)])

    lines = capsys.readouterr().err.splitlines()
    assert code == 0 and out.read_bytes() == (tmp_path / "plain.csv").read_bytes()
    assert len(lines) == len(plain) + 1, lines
    assert lines[0].startswith("warning: cache folder") and "continuing without it" in lines[0]
