"""The row store on its own: key lookups past SQLite's parameter limit, the key format's
staleness rule, reopening a store from its spec, and the lock clearing waits for."""

from __future__ import annotations

import fcntl
import os
import threading
import time

import numpy as np
import pytest

from postergenre.data.store import ArrayStore, file_key, is_stale_key
from postergenre.data.store_folder import read_entries, remove_store
from postergenre.errors import UserError


def test_lookup_and_checksums_cover_more_keys_than_one_query_may_bind(tmp_path):
    store = ArrayStore(tmp_path / "store", (1,), "int32")
    keys = [f"k{i}" for i in range(2000)]
    store.append([(k, np.array([i]), None) for i, k in enumerate(keys)])

    found = store.lookup([*keys, *keys[:5]])  # repeated keys are looked up once

    assert len(found) == 2000 and found["k1999"] == (1999, None)
    data = np.array(store.rows())
    data[1500] += 1  # one row damaged past the first chunk of keys
    assert store.damaged(keys, data) == ["k1500"]
    known, mapped, damaged = store.snapshot(keys)
    assert known == found and mapped.shape == (2000, 1) and damaged == []


def test_a_key_is_stale_once_its_file_changes_or_goes(tmp_path):
    path = tmp_path / "poster.png"
    path.write_bytes(b"one")
    key = file_key(path)
    assert not is_stale_key(key)

    path.write_bytes(b"three")  # another size
    assert is_stale_key(key)
    assert not is_stale_key(file_key(path))
    path.unlink()
    assert is_stale_key("not-a-file-key")
    assert is_stale_key(f"{path}|5|0")


def test_reopen_uses_the_shape_the_store_recorded(tmp_path):
    written = ArrayStore(tmp_path / "embeddings-x", (3,), "float32")
    written.append([("a", np.array([0.5, 1.5, 2.5]), None), ("b", None, "unreadable")])
    written.close()

    store = ArrayStore.reopen(tmp_path / "embeddings-x")

    assert store is not None
    assert (store.row_shape, store.dtype) == ((3,), np.dtype("float32"))
    assert np.array_equal(store.rows()[store.lookup(["a"])["a"][0]], [0.5, 1.5, 2.5])
    store.close()
    (tmp_path / "empty").mkdir()
    assert ArrayStore.reopen(tmp_path / "empty") is None
    assert list((tmp_path / "empty").iterdir()) == []  # nothing created


def test_read_entries_opens_the_index_read_only(tmp_path):
    store = ArrayStore(tmp_path / "store", (1,), "uint8")
    store.append([("a", np.array([1]), None), ("b", None, "bad")])
    store.close()

    assert sorted(read_entries(tmp_path / "store")) == [("a", 0), ("b", -1)]
    (tmp_path / "new").mkdir()
    assert read_entries(tmp_path / "new") == []
    assert list((tmp_path / "new").iterdir()) == []
    (tmp_path / "store" / "index.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(UserError, match="cannot read cache index"):
        read_entries(tmp_path / "store")


def test_removing_a_store_waits_for_its_writer(tmp_path):
    folder = tmp_path / "posters-store"
    ArrayStore(folder, (1,), "uint8").append([("a", np.array([1]), None)])
    with open(folder / "lock", "a") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)  # a writer halfway through an append
        remover = threading.Thread(target=remove_store, args=(folder,))
        remover.start()
        time.sleep(0.3)
        assert (folder / "rows.bin").exists()  # nothing deleted under the writer
        fcntl.flock(writer, fcntl.LOCK_UN)
    remover.join(timeout=10)
    assert not remover.is_alive() and not os.path.exists(folder)


def test_waiting_for_another_process_filling_the_store_is_said(tmp_path, capsys):
    """A second writer of the same store waits for the first (it then finds its rows): the
    wait is said on stderr with the holder's process id, never silent."""
    store = ArrayStore(tmp_path / "s", (1,), "uint8")
    entered = threading.Event()

    def second_writer() -> None:
        with store.computing():
            entered.set()

    with store.computing():  # the first writer, holding the work lock
        assert (tmp_path / "s" / "work.lock").read_text() == str(os.getpid())
        other = threading.Thread(target=second_writer)
        other.start()
        for _ in range(500):  # until the second writer has said it waits
            if "waiting for another postergenre process" in capsys.readouterr().err:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the wait was never said")
        assert not entered.is_set()  # it really waits
    other.join(timeout=10)
    assert entered.is_set()
