"""`train` without --arch trains the best practical architecture (a linear probe on
EfficientNet-Lite0 embeddings) and says so; --arch seed-cnn still trains the article's CNN."""

from __future__ import annotations

import contextlib
import io

import pytest

from postergenre.cli import main
from postergenre.cli.main import build_parser
from postergenre.training import run
from postergenre.training.config import DEFAULT_ARCH, TrainConfig


@pytest.fixture
def trained(monkeypatch) -> list[TrainConfig]:
    """The configs `train` was called with (nothing is trained)."""
    calls: list[TrainConfig] = []
    monkeypatch.setattr(run, "train", lambda cfg: calls.append(cfg) or cfg.out / "model")
    return calls


def test_the_default_is_the_lite0_probe_and_the_cli_says_so(trained, tmp_path, capsys):
    assert DEFAULT_ARCH == "efficientnet-lite0"
    assert TrainConfig(out=tmp_path).arch == DEFAULT_ARCH
    assert main(["train", "--folder", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    assert trained[-1].arch == DEFAULT_ARCH and trained[-1].mode is None  # its default: probe
    err = capsys.readouterr().err
    assert f"no --arch given: training {DEFAULT_ARCH} (a linear probe" in err
    assert "--arch seed-cnn trains the article's CNN instead" in err


def test_naming_an_architecture_trains_it_without_the_notice(trained, tmp_path, capsys):
    argv = ["train", "--folder", str(tmp_path), "--out", str(tmp_path / "r"), "--arch", "seed-cnn"]
    assert main(argv) == 0
    assert trained[-1].arch == "seed-cnn"
    assert "no --arch given" not in capsys.readouterr().err


def test_help_names_the_default():
    parser = build_parser()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    assert f"Default {DEFAULT_ARCH}:" in " ".join(out.getvalue().split())


def test_an_architecture_typed_in_other_case_is_recorded_as_registered(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(run, "_train", lambda cfg, spec, mode: seen.append((cfg.arch, mode)))
    run.train(TrainConfig(out=tmp_path, arch="Seed-CNN"))
    assert seen == [("seed-cnn", "scratch")]
