"""Training on several processes (torchrun, gloo on CPU) against one process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from postergenre.errors import UserError
from postergenre.training import distributed, trainer
from tests.conftest import folder_state, make_tiny_folder

REPO = Path(__file__).resolve().parents[2]
# Measured on the tiny posters (seed-cnn, 2 epochs, global batch 8): the two runs' losses
# differ by ~2e-5 on 8/4 posters per genre, ~5e-6 on 4/2 (float summation order), accuracies
# are identical.
LOSS_TOLERANCE = 1e-3


def _train(folder: Path, out: Path, processes: int, *extra: str) -> subprocess.CompletedProcess:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(processes)]
    argv = ["-m", "postergenre", "train", "--folder", str(folder), "--out", str(out)]
    argv += ["--arch", "seed-cnn", "--batch-size", "8", "--seed", "3"]
    argv += ["--cache-dir", str(out.parent / "cache"), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launcher, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _history(run: Path) -> list[dict[str, float]]:
    with (run / "history.csv").open() as handle:
        return [
            {k: float(v) for k, v in row.items() if k != "seconds"}
            for row in csv.DictReader(handle)
        ]


@pytest.fixture(scope="module")
def posters(tmp_path_factory) -> Path:
    """Tiny posters, 4/2/1 per genre: 12 training posters make a full global batch of 8 and a
    last one of 4 (2 per rank), and each run trains on half of the usual tiny set."""
    return make_tiny_folder(tmp_path_factory.mktemp("posters"), per_genre=(4, 2, 1))


@pytest.fixture(scope="module")
def two_process_run(posters, tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """A 2-epoch run on 2 gloo processes, and its stderr: what both tests below compare against
    (the resume test's straight run is this same command). They only read it."""
    run = tmp_path_factory.mktemp("distributed") / "two"
    stderr = _train(posters, run, 2, "--epochs", "2").stderr
    before = folder_state(run)
    yield run, stderr
    assert folder_state(run) == before, "a test changed the shared two-process run"


def test_two_processes_match_one_process(posters, two_process_run, tmp_path):
    """2 gloo processes (4 posters each per step) against 1 process (8 per step), 2 epochs:
    accuracies, balanced accuracies and macro F1 are equal; every loss (train and val of each
    epoch, the bundle's log loss and ECE) agrees within 1e-3 (measured: ~5e-6)."""
    one, (two, two_stderr) = tmp_path / "one", two_process_run
    _train(posters, one, 1, "--epochs", "2")

    one_rows, two_rows = _history(one), _history(two)
    assert len(one_rows) == len(two_rows) == 2
    for a, b in zip(one_rows, two_rows, strict=True):
        for key in a:
            tol = LOSS_TOLERANCE if key.endswith("loss") else 0.0
            assert abs(a[key] - b[key]) <= tol, (key, a[key], b[key])
    meta = [json.loads((run / "model" / "model.json").read_text()) for run in (one, two)]
    val_one, val_two = (m["metrics"]["val"] for m in meta)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "n"):
        assert val_one[key] == val_two[key], key
    for key in ("log_loss", "ece"):
        assert val_one[key] == pytest.approx(val_two[key], abs=LOSS_TOLERANCE), key
    # rank 0 alone printed and wrote: one bundle line, no temporaries of a second writer
    assert two_stderr.count("model bundle written to") == 1
    assert not [p for p in two.rglob("*") if p.name.endswith(".tmp")]


def test_resume_under_torchrun_equals_the_straight_run(posters, two_process_run, tmp_path):
    """With augmentation on, so the resumed ranks must also restore their augmentation RNG."""
    run = tmp_path / "run"
    _train(posters, run, 2, "--epochs", "1")
    after_one = _history(run)
    _train(posters, run, 2, "--epochs", "2", "--resume")
    assert _history(run)[:1] == after_one
    assert _history(run) == _history(two_process_run[0])


@pytest.mark.parametrize("balance", ["weights", "sampler"])
def test_shards_of_each_step_are_the_single_process_batch(balance):
    y = np.repeat(np.arange(3), [10, 3, 7])
    split = type("Split", (), {"y": y, "__len__": lambda self: len(y)})()
    cfg = trainer.LoopConfig(
        task="single", epochs=1, batch_size=8, seed=5, patience=1, monitor="val_loss",
        balance=balance, normalisation=None, augment=None,  # type: ignore[arg-type]
    )  # fmt: skip
    order = trainer.epoch_order(split, cfg, trainer.epoch_generator(5, 0))
    for start in range(0, len(order), cfg.batch_size):
        batch = np.sort(order[start : start + cfg.batch_size])
        parts = [distributed.shard(batch, r, 2) for r in range(2)]
        assert sorted(np.concatenate(parts).tolist()) == sorted(batch.tolist())
        assert abs(len(parts[0]) - len(parts[1])) <= 1
    assert distributed.local_batch_size(8, 2) == 4
    with pytest.raises(UserError, match="does not split evenly"):
        distributed.local_batch_size(7, 2)


def test_summed_shard_losses_give_the_weighted_mean_of_the_batch():
    """What makes DDP's averaged gradient the one-process gradient: the shards' summed losses
    over the global normaliser add up to the mean-reduced loss of the whole batch."""
    torch.manual_seed(0)
    logits, y = torch.randn(8, 3), np.array([0, 0, 0, 0, 0, 1, 2, 2])
    weighted = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.5, 3.0, 1.2]))
    summed = torch.nn.CrossEntropyLoss(weight=weighted.weight, reduction="sum")
    norm = trainer._normaliser(summed, y)
    parts = [summed(logits[r::2], torch.from_numpy(y[r::2])) / norm for r in range(2)]
    assert float(sum(parts)) == pytest.approx(float(weighted(logits, torch.from_numpy(y))))
    assert norm != len(y)  # the class weights, not the count, normalise a weighted loss
