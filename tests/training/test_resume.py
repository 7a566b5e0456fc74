"""Checkpoints, resume and early stopping of the training loop."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from postergenre.errors import UserError
from postergenre.training import trainer
from postergenre.training.run import TrainConfig, train
from tests.conftest import folder_state, make_tiny_folder


@pytest.fixture(scope="module")
def posters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tiny posters, 4/2/1 per genre: what these tests check (resumed = straight, the stops,
    the refusals) does not depend on the number of posters, and an epoch over 12 training and
    6 validation posters costs about half of one over the usual 24 and 12."""
    root = make_tiny_folder(tmp_path_factory.mktemp("resume") / "posters", per_genre=(4, 2, 1))
    before = folder_state(root)
    yield root
    assert folder_state(root) == before, "a test changed the shared posters"


def _config(folder: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(
        folder=folder, arch="seed-cnn", epochs=3, patience=10, seed=1, batch_size=8, progress=False
    )
    settings.update(overrides)
    return TrainConfig(out=out, **settings)


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def test_resume_after_interrupt_equals_uninterrupted_run(posters, tmp_path, monkeypatch):
    train(_config(posters, tmp_path / "straight"))

    real_epoch = trainer.train_one_epoch
    calls = {"n": 0}

    def interrupted_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", interrupted_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(_config(posters, tmp_path / "resumed"))
    assert len(_history(tmp_path / "resumed")) == 1  # only the finished epoch was recorded
    assert not (tmp_path / "resumed" / "model").exists()

    monkeypatch.setattr(trainer, "train_one_epoch", real_epoch)
    train(_config(posters, tmp_path / "resumed", resume=True))

    assert _history(tmp_path / "resumed") == _history(tmp_path / "straight")
    a = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_existing_run_needs_resume_and_resume_needs_a_run(posters, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        train(_config(posters, tmp_path / "run", resume=True, epochs=1))
    train(_config(posters, tmp_path / "run", epochs=1))
    with pytest.raises(UserError, match="already holds a run"):
        train(_config(posters, tmp_path / "run", epochs=1))
    with pytest.raises(UserError, match="different seed"):
        train(_config(posters, tmp_path / "run", epochs=2, seed=7, resume=True))


def test_early_stopping_keeps_the_best_epoch(posters, tmp_path):
    # A zero learning rate never improves after epoch 1: patience 2 stops after epoch 3.
    bundle = train(_config(posters, tmp_path / "run", epochs=10, patience=2, lr=0.0))
    history = _history(tmp_path / "run")
    assert len(history) == 3
    import json

    meta = json.loads((bundle / "model.json").read_text())
    assert meta["training"]["best_epoch"] == 1
    assert meta["training"]["stopped"].startswith("early stop")


def test_diverging_loss_stops_cleanly_with_best_epoch(posters, tmp_path, monkeypatch):
    real_epoch = trainer.train_one_epoch
    calls = {"n": 0}

    def diverge_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise trainer.TrainingDiverged("loss became nan in epoch 2")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", diverge_in_second_epoch)
    bundle = train(_config(posters, tmp_path / "run", epochs=4))
    assert (bundle / "model.safetensors").is_file()
    assert len(_history(tmp_path / "run")) == 1


def _interrupt_first_epoch(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_one_epoch", interrupted)


def test_ctrl_c_in_the_first_epoch_then_resume_or_rerun_both_work(
    posters, tmp_path, monkeypatch, capsys
):
    from postergenre.cli import main

    real_epoch = trainer.train_one_epoch
    argv = ["train", "--folder", str(posters), "--out", str(tmp_path / "run")]
    argv += ["--arch", "seed-cnn", "--epochs", "1", "--batch-size", "8"]
    for again in ([*argv, "--resume"], argv):
        _interrupt_first_epoch(monkeypatch)
        assert main(argv) == 130
        assert "--resume" in capsys.readouterr().err  # the message says what to do ...
        monkeypatch.setattr(trainer, "train_one_epoch", real_epoch)
        assert main(again) == 0  # ... and so does the plain command: nothing was saved yet
        assert (tmp_path / "run" / "model" / "model.json").is_file()
        import shutil

        shutil.rmtree(tmp_path / "run")


def test_stale_temporaries_of_a_killed_run_are_cleaned(posters, tmp_path):
    run = tmp_path / "run"
    train(_config(posters, run, epochs=1))
    # what kill -9 during a checkpoint or bundle write leaves behind
    (run / "checkpoints" / ".last.safetensors.0badc0de.tmp").write_bytes(b"\0" * 4096)
    (run / ".model.1234abcd.tmp").mkdir()
    (run / ".model.1234abcd.tmp" / "model.safetensors").write_bytes(b"\0" * 10)
    keep = run / "checkpoints" / "notes.tmp"  # not a name we write: left alone
    keep.write_text("mine")
    train(_config(posters, run, epochs=2, resume=True))
    leftovers = [p.name for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == ["notes.tmp"]
