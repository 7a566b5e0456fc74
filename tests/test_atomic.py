"""Atomic writes: a file or folder appears whole or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from postergenre.atomic import (
    atomic_path,
    new_folder_beside,
    remove_stale_temporaries,
    replace_folder,
    write_json,
    write_text,
)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "out.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_files_get_the_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_text(tmp_path / "shared.csv", "a,b\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's private 0600


def test_json_refuses_nan_instead_of_writing_invalid_json(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "m.json", {"accuracy": float("nan")})
    assert not list(tmp_path.iterdir())


def test_replace_folder_swaps_a_whole_folder(tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.txt").write_text("old")
    tmp = new_folder_beside(target)
    (tmp / "new.txt").write_text("new")
    replace_folder(tmp, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_stale_temporaries_are_found_by_name_only(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.bin") as tmp:
        tmp.rename(tmp_path / ".a.bin.deadbeef.tmp")
        raise RuntimeError
    new_folder_beside(tmp_path / "bundle")
    (tmp_path / "mine.tmp").write_text("not ours")
    assert remove_stale_temporaries(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["mine.tmp"]
