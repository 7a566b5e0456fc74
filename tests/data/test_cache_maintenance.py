"""Cache maintenance: what `cache_info` reports, what `prune_cache` drops and compacts (without
ever handing out wrong rows), and what `clear_cache` removes or refuses to touch."""

from __future__ import annotations

import fcntl
import os
import sqlite3

import numpy as np
import pytest

from postergenre.console import format_bytes
from postergenre.data.cache import PosterCache
from postergenre.data.cache_admin import cache_info, clear_cache, prune_cache
from postergenre.data.preprocess import UNIT_RANGE, InputSpec, load_poster_array
from postergenre.data.store import ArrayStore, file_key
from postergenre.errors import UserError
from tests.conftest import make_poster

WIDTH, HEIGHT = 4, 6
SPEC = InputSpec(WIDTH, HEIGHT, "squash", UNIT_RANGE)
ROW_BYTES = WIDTH * HEIGHT * 3
FOLDER = f"posters-{WIDTH}x{HEIGHT}-squash"


@pytest.fixture
def posters(tmp_path):
    """Four small noisy posters, each with its own pixels."""
    colours = [(200, 40, 30), (230, 210, 40), (40, 60, 190), (90, 90, 90)]
    return [
        make_poster(tmp_path / "posters" / f"p{i}.png", colour, seed=i)
        for i, colour in enumerate(colours)
    ]


def rewrite(path, seed):
    """New pixels in the same file, with its mtime moved on as a download would."""
    before = path.stat().st_mtime_ns
    make_poster(path, (10, 250, 10), seed=seed)
    os.utime(path, ns=(before + 5_000_000_000, before + 5_000_000_000))


def folder_bytes(folder):
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def load(cache_dir, paths):
    return PosterCache(cache_dir, SPEC).load(paths, workers=1, progress=False)


def test_info_counts_entries_failures_stale_entries_and_bytes(tmp_path, posters):
    cache_dir = tmp_path / "cache"
    bad = tmp_path / "posters" / "bad.jpg"
    bad.write_bytes(b"")
    load(cache_dir, [*posters, bad])

    info = cache_info(cache_dir)

    assert [(f.name, f.kind) for f in info.folders] == [(FOLDER, "posters")]
    folder = info.folders[0]
    assert (folder.entries, folder.failed, folder.stale) == (5, 1, 0)
    assert folder.bytes == folder_bytes(cache_dir / FOLDER) > 4 * ROW_BYTES
    assert (info.entries, info.bytes) == (5, folder.bytes)

    rewrite(posters[0], seed=50)
    posters[1].unlink()
    info = cache_info(cache_dir)

    assert (info.entries, info.failed, info.stale) == (5, 1, 2)
    table = info.format()
    assert FOLDER in table and "total" in table and format_bytes(info.bytes) in table


def test_info_reports_embeddings_and_onnx_folders(tmp_path, posters):
    cache_dir = tmp_path / "cache"
    store = ArrayStore(cache_dir / "embeddings-seed-4x6-squash", (3,), "float32")
    store.append([(file_key(posters[0]), np.ones(3), None), ("gone|1|2", np.zeros(3), None)])
    (cache_dir / "onnx").mkdir()
    (cache_dir / "onnx" / "seed-cnn-abc.onnx").write_bytes(b"x" * 1234)

    info = cache_info(cache_dir)

    kinds = {f.name: (f.kind, f.entries, f.stale) for f in info.folders}
    assert kinds == {
        "embeddings-seed-4x6-squash": ("embeddings", 2, 1),
        "onnx": ("onnx", 1, 0),
    }
    assert next(f.bytes for f in info.folders if f.kind == "onnx") == 1234


def test_prune_compacts_a_store_in_the_shape_its_spec_records(tmp_path, posters):
    cache_dir = tmp_path / "cache"
    store = ArrayStore(cache_dir / "embeddings-seed-4x6-squash", (3,), "float32")
    live = np.array([0.25, -1.5, 3.0], dtype=np.float32)
    store.append([("gone|1|2", np.zeros(3), None), (file_key(posters[0]), live, None)])
    store.close()
    (cache_dir / "text-never-written").mkdir()  # a store folder that never got a spec

    report = prune_cache(cache_dir)

    assert report.entries_removed == 1
    assert report.bytes_freed >= 3 * 4  # at least the dropped float32 row
    assert list((cache_dir / "text-never-written").iterdir()) == []
    again = ArrayStore(cache_dir / "embeddings-seed-4x6-squash", (3,), "float32")
    [(key, (row, _))] = again.lookup([file_key(posters[0]), "gone|1|2"]).items()
    assert key == file_key(posters[0]) and row == 0
    assert np.array_equal(again.rows()[row], live) and len(again.rows()) == 1


def test_info_and_prune_on_a_missing_folder_create_nothing(tmp_path):
    missing = tmp_path / "no-cache"

    info = cache_info(missing)
    report = prune_cache(missing)

    assert info.folders == [] and info.entries == 0 and info.bytes == 0
    assert "empty" in info.format()
    assert (report.entries_removed, report.bytes_freed) == (0, 0)
    assert clear_cache(missing) == 0
    assert not missing.exists()


def test_prune_drops_a_changed_posters_old_entry_and_shrinks_the_rows(tmp_path, posters):
    cache_dir = tmp_path / "cache"
    load(cache_dir, posters)
    rewrite(posters[0], seed=50)
    load(cache_dir, posters)  # the new content gets a new key and a fifth row
    rows_bin = cache_dir / FOLDER / "rows.bin"
    assert rows_bin.stat().st_size == 5 * ROW_BYTES
    assert cache_info(cache_dir).stale == 1

    report = prune_cache(cache_dir)

    assert report.entries_removed == 1
    assert rows_bin.stat().st_size == 4 * ROW_BYTES
    assert report.bytes_freed >= ROW_BYTES
    info = cache_info(cache_dir)
    assert (info.entries, info.stale) == (4, 0)
    assert not (cache_dir / FOLDER / "rows.bin.compact").exists()
    assert prune_cache(cache_dir).entries_removed == 0  # nothing left to do


def test_rows_after_prune_are_exactly_the_rows_before(tmp_path, posters, decoded):
    cache_dir = tmp_path / "cache"
    load(cache_dir, posters)
    rewrite(posters[0], seed=50)  # row 0 goes stale, so every live row moves down by one
    before = load(cache_dir, posters)
    expected = {i: np.array(before[i]) for i in range(len(posters))}
    old_rows = before.rows.copy()

    prune_cache(cache_dir)
    decoded.clear()
    after = load(cache_dir, posters)

    assert decoded == []  # nothing was decoded again: the rows came from the compacted file
    assert not np.array_equal(after.rows, old_rows)  # the rows really were renumbered
    for i, path in enumerate(posters):
        assert np.array_equal(after[i], expected[i])
        assert np.array_equal(after[i], load_poster_array(path, SPEC))
    # The arrays handed out before the prune still read the old file's (correct) rows.
    assert all(np.array_equal(before[i], expected[i]) for i in range(len(posters)))


def test_a_deleted_posters_entry_is_pruned(tmp_path, posters):
    cache_dir = tmp_path / "cache"
    load(cache_dir, posters)
    gone_key = file_key(posters[2])
    posters[2].unlink()

    report = prune_cache(cache_dir)

    assert report.entries_removed == 1
    with sqlite3.connect(cache_dir / FOLDER / "index.sqlite") as db:
        keys = {key for (key,) in db.execute("SELECT key FROM rows")}
    assert gone_key not in keys and len(keys) == 3
    assert (cache_dir / FOLDER / "rows.bin").stat().st_size == 3 * ROW_BYTES
    kept = [posters[0], posters[1], posters[3]]
    after = load(cache_dir, kept)
    for i, path in enumerate(kept):
        assert np.array_equal(after[i], load_poster_array(path, SPEC))


def test_prune_removes_a_failure_of_a_deleted_file_without_rewriting_rows(tmp_path, posters):
    cache_dir = tmp_path / "cache"
    bad = tmp_path / "posters" / "bad.jpg"
    bad.write_bytes(b"")
    load(cache_dir, [*posters, bad])
    rows_bin = cache_dir / FOLDER / "rows.bin"
    inode = rows_bin.stat().st_ino
    bad.unlink()

    report = prune_cache(cache_dir)

    assert report.entries_removed == 1
    assert rows_bin.stat().st_ino == inode  # only the index changed
    assert cache_info(cache_dir).failed == 0


def test_prune_drops_a_partial_row_left_by_a_crash(tmp_path, posters):
    cache_dir = tmp_path / "cache"
    load(cache_dir, posters)
    rows_bin = cache_dir / FOLDER / "rows.bin"
    with open(rows_bin, "ab") as data:
        data.write(b"\x07" * 5)

    report = prune_cache(cache_dir)

    assert report.entries_removed == 0 and report.bytes_freed >= 5
    assert rows_bin.stat().st_size == 4 * ROW_BYTES
    after = load(cache_dir, posters)
    assert np.array_equal(after[3], load_poster_array(posters[3], SPEC))


def test_fill_store_maps_the_rows_under_a_shared_lock(tmp_path, posters, monkeypatch):
    cache = PosterCache(tmp_path / "cache", SPEC)
    cache.load(posters, workers=1, progress=False)
    seen: list[tuple[bool, bool]] = []
    real_rows = ArrayStore.rows

    def probing_rows(store):
        with open(store.directory / "lock", "a") as other:
            # Another shared holder is welcome; an exclusive one (a compaction) must wait.
            seen.append((_can_lock(other, fcntl.LOCK_SH), _can_lock(other, fcntl.LOCK_EX)))
        return real_rows(store)

    monkeypatch.setattr(ArrayStore, "rows", probing_rows)
    cached = cache.load(posters, workers=1, progress=False)

    assert seen == [(True, False)]
    assert list(cached.ok) == [0, 1, 2, 3]


def _can_lock(handle, mode):
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(handle, fcntl.LOCK_UN)
    return True


def test_a_compaction_that_died_after_its_commit_is_finished(tmp_path, posters, monkeypatch):
    cache_dir = tmp_path / "cache"
    load(cache_dir, posters)
    rewrite(posters[0], seed=50)
    load(cache_dir, posters)
    # Die right after the index switched to the new row numbers, before the rename.
    monkeypatch.setattr(ArrayStore, "_recover", lambda store: None)
    prune_cache(cache_dir)
    monkeypatch.undo()
    assert (cache_dir / FOLDER / "rows.bin.compact").exists()

    after = load(cache_dir, posters)

    for i, path in enumerate(posters):
        assert np.array_equal(after[i], load_poster_array(path, SPEC))
    assert not (cache_dir / FOLDER / "rows.bin.compact").exists()
    assert (cache_dir / FOLDER / "rows.bin").stat().st_size == 4 * ROW_BYTES


def test_a_compaction_that_died_before_its_commit_is_undone(tmp_path, posters):
    cache_dir = tmp_path / "cache"
    load(cache_dir, posters)
    leftover = cache_dir / FOLDER / "rows.bin.compact"
    leftover.write_bytes(b"\xff" * ROW_BYTES)  # half-written, index never switched

    after = load(cache_dir, posters)

    for i, path in enumerate(posters):
        assert np.array_equal(after[i], load_poster_array(path, SPEC))
    assert not leftover.exists()


def test_clear_empties_the_cache_and_reports_the_bytes(tmp_path, posters, decoded):
    cache_dir = tmp_path / "cache"
    load(cache_dir, posters)
    ArrayStore(cache_dir / "embeddings-seed-4x6-squash", (3,), "float32").append(
        [(file_key(posters[0]), np.ones(3), None)]
    )
    (cache_dir / "onnx").mkdir()
    (cache_dir / "onnx" / "seed-cnn-abc.onnx").write_bytes(b"x" * 1000)
    expected = folder_bytes(cache_dir)

    freed = clear_cache(cache_dir)

    assert freed == expected > 4 * ROW_BYTES + 1000
    assert cache_dir.is_dir() and list(cache_dir.iterdir()) == []
    assert cache_info(cache_dir).entries == 0
    decoded.clear()
    load(cache_dir, posters)  # the cache works again, from scratch
    assert len(decoded) == 4


@pytest.mark.parametrize("foreign", ["notes.txt", "Documents/", f"{FOLDER}/thesis.tex"])
def test_clear_refuses_a_folder_holding_foreign_files(tmp_path, posters, foreign):
    cache_dir = tmp_path / "cache"
    load(cache_dir, posters)
    target = cache_dir / foreign
    if foreign.endswith("/"):
        target.mkdir()
    else:
        target.write_text("mine")
    before = sorted(p.relative_to(cache_dir) for p in cache_dir.rglob("*"))

    with pytest.raises(UserError, match="does not look like a postergenre cache"):
        clear_cache(cache_dir)

    assert sorted(p.relative_to(cache_dir) for p in cache_dir.rglob("*")) == before


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(3_400) == "3.4 kB"
    assert format_bytes(1_600_000_000) == "1.6 GB"
    assert format_bytes(3_500_000_000_000) == "3500.0 GB"
