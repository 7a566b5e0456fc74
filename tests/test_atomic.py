"""Atomic writes: a file or folder appears whole or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from postergenre.atomic import (
    atomic_folder,
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


@pytest.mark.parametrize(
    ("umask", "private", "mode"),
    [(0o022, False, 0o755), (0o027, False, 0o750), (0o077, False, 0o700), (0o022, True, 0o700)],
)
def test_folders_honour_the_umask_like_mkdir(tmp_path, umask, private, mode):
    """An atomically written folder (bundles, indexes) was silently 0700 (mkdtemp's mode)."""
    previous = os.umask(umask)
    try:
        with atomic_folder(tmp_path / "out", private=private) as tmp:
            (tmp / "a.txt").write_text("a")
        replaced = tmp_path / "out"
        with atomic_folder(replaced, private=private) as tmp:  # swapped over an existing one
            (tmp / "b.txt").write_text("b")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(replaced.stat().st_mode) == mode
    assert [p.name for p in replaced.iterdir()] == ["b.txt"]


def test_a_saved_model_bundle_is_readable_by_others_under_the_usual_umask(tmp_path):
    from tests.conftest import make_seed_bundle

    previous = os.umask(0o022)
    try:
        bundle = make_seed_bundle(tmp_path / "bundle")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o755
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in bundle.iterdir())


def test_a_checkpoint_written_by_safetensors_gets_the_usual_permissions(tmp_path):
    """safetensors writes 0600 files, even over the temporary file atomic_path made."""
    import torch

    from postergenre.training.checkpoint import save_checkpoint

    model = torch.nn.Linear(2, 1)
    previous = os.umask(0o022)
    try:
        path = tmp_path / "run" / "last.safetensors"
        save_checkpoint(path, model, torch.optim.SGD(model.parameters(), lr=0.1), {"epoch": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
