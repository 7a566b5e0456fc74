"""A damaged cache never serves another poster's row: damage is found, dropped and recomputed
with one warning line, and two writers on one cache do not both redo the work."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from postergenre.data.cache import PosterCache, fill_store
from postergenre.data.preprocess import UNIT_RANGE, InputSpec, load_poster_array
from postergenre.data.store import ArrayStore, file_key
from tests.conftest import make_poster

WIDTH, HEIGHT = 4, 6
SPEC = InputSpec(WIDTH, HEIGHT, "squash", UNIT_RANGE)
FOLDER = f"posters-{WIDTH}x{HEIGHT}-squash"


@pytest.fixture
def posters(tmp_path) -> list[Path]:
    return [make_poster(tmp_path / "p" / f"{i:02d}.png", (9 * i, 200 - 7 * i, 60), seed=i)
            for i in range(24)]  # fmt: skip


def _load(cache_dir: Path, paths: list[Path]) -> np.ndarray:
    cached = PosterCache(cache_dir, SPEC).load(paths, progress=False)
    assert not cached.errors
    return cached[np.arange(len(paths))]


def _expected(paths: list[Path]) -> np.ndarray:
    return np.stack([load_poster_array(p, SPEC) for p in paths])


def test_truncated_rows_are_recomputed_and_new_rows_never_overwrite_old_ones(
    posters, tmp_path, capsys
):
    cache = tmp_path / "cache"
    _load(cache, posters[:16])
    rows = cache / FOLDER / "rows.bin"
    with rows.open("r+b") as handle:
        handle.truncate(8 * WIDTH * HEIGHT * 3 + 5)  # 8 whole rows and a partial one survive
    # all 24 again: 8 damaged entries and 8 new posters are computed, nothing else moves
    np.testing.assert_array_equal(_load(cache, posters), _expected(posters))
    np.testing.assert_array_equal(_load(cache, posters), _expected(posters))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "cache" in line]
    assert len(warnings) == 1 and "8" in warnings[0], warnings


def test_rows_damaged_in_place_are_found_by_their_checksum(posters, tmp_path, capsys):
    cache = tmp_path / "cache"
    _load(cache, posters)
    rows = cache / FOLDER / "rows.bin"
    row_bytes = WIDTH * HEIGHT * 3
    with rows.open("r+b") as handle:  # zero-fill rows 3..9 in place, size unchanged
        handle.seek(3 * row_bytes)
        handle.write(b"\0" * 7 * row_bytes)
    np.testing.assert_array_equal(_load(cache, posters), _expected(posters))
    [warning] = [line for line in capsys.readouterr().err.splitlines() if "checksum" in line]
    assert "7 " in warning


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: (folder / "index.sqlite").write_bytes(b"this is not a database" * 100),
        lambda folder: (folder / "store.json").write_text("{garbage"),
        lambda folder: (folder / "store.json").write_text("[1, 2, 3]"),
    ],
    ids=["corrupt-index", "garbage-spec", "not-a-spec"],
)
def test_a_damaged_store_is_started_again_with_one_warning(posters, tmp_path, capsys, damage):
    cache = tmp_path / "cache"
    _load(cache, posters)
    damage(cache / FOLDER)
    np.testing.assert_array_equal(_load(cache, posters), _expected(posters))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
    assert len(warnings) == 1, warnings


def _writer(folder: str, log: str, n: int) -> None:
    store = ArrayStore(Path(folder), (3,), "float32")
    keys_file = Path(log)

    def compute(indices):
        for i in indices:
            time.sleep(0.05)  # slow enough (2 s in all) that both writers overlap
            with keys_file.open("a") as handle:
                handle.write(f"{os.getpid()} {i}\n")
            yield i, np.full(3, i, np.float32), None

    paths = [Path(folder).parent / "files" / f"{i}.txt" for i in range(n)]
    result = fill_store(store, paths, compute)
    assert np.array_equal(result[np.arange(n)][:, 0], np.arange(n, dtype=np.float32))


def test_two_writers_on_one_cache_do_not_both_compute_everything(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    n = 40
    for i in range(n):
        (files / f"{i}.txt").write_text(str(i))
    log = tmp_path / "computed.log"
    context = multiprocessing.get_context("spawn")  # no inherited threads or locks
    workers = [
        context.Process(target=_writer, args=(str(tmp_path / "store"), str(log), n))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    computed = log.read_text().splitlines()
    assert len(computed) == n, f"{len(computed)} computations for {n} keys"


def test_rows_stored_before_checksums_existed_are_computed_again(posters, tmp_path):
    folder = tmp_path / "cache" / FOLDER
    folder.mkdir(parents=True)
    (folder / "store.json").write_text(
        json.dumps({"row_shape": [HEIGHT, WIDTH, 3], "dtype": "|u1"})
    )
    (folder / "rows.bin").write_bytes(b"\x07" * (WIDTH * HEIGHT * 3) * 2)  # not these posters
    with closing(sqlite3.connect(folder / "index.sqlite")) as db, db:  # the old schema: no crc
        db.execute("CREATE TABLE rows (key TEXT PRIMARY KEY, row INTEGER, error TEXT)")
        db.executemany(
            "INSERT INTO rows VALUES (?, ?, NULL)",
            [(file_key(p), i) for i, p in enumerate(posters[:2])],
        )

    np.testing.assert_array_equal(_load(tmp_path / "cache", posters[:2]), _expected(posters[:2]))
    store = ArrayStore(folder, (HEIGHT, WIDTH, 3), "uint8")
    assert store.lookup([file_key(posters[0])])[file_key(posters[0])][0] >= 2  # a new row

    # and never through an index that still has unchecked entries the reader did not add
    with closing(sqlite3.connect(folder / "index.sqlite")) as db, db:
        db.execute("UPDATE rows SET crc = NULL")
    assert store.lookup([file_key(p) for p in posters[:2]]) == {}
