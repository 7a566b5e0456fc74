"""`train` without --arch trains the best practical architecture (a linear probe on
EfficientNet-Lite0 embeddings) and says so; --arch seed-cnn still trains the article's CNN."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from postergenre.cli import main
from postergenre.cli.main import build_parser
from postergenre.training import run
from postergenre.training.config import DEFAULT_ARCH, TrainConfig


def test_the_default_is_the_lite0_probe_and_the_run_says_so(tiny_posters, tmp_path, capsys):
    assert DEFAULT_ARCH == "efficientnet-lite0"
    assert main(["train", "--folder", str(tiny_posters), "--out", str(tmp_path / "r")]) == 0
    card = json.loads((tmp_path / "r" / "model" / "model.json").read_text())
    assert card["architecture"] == DEFAULT_ARCH and card["mode"] == "linear-probe"
    err = capsys.readouterr().err
    assert f"no --arch given: training {DEFAULT_ARCH} (a linear probe" in err
    assert "--arch seed-cnn trains the article's CNN instead" in err


def test_the_notice_comes_only_after_the_data_loaded(tmp_path, capsys):
    """A refusal stays one line: nothing is announced before the data is read."""
    assert (
        main(["train", "--labels", str(tmp_path / "none.csv"), "--out", str(tmp_path / "r")]) == 2
    )
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_naming_an_architecture_trains_it_without_the_notice(monkeypatch, tmp_path, capsys):
    seen = []
    monkeypatch.setattr(run, "_train", lambda cfg, spec, mode, announce: seen.append(announce))
    argv = ["train", "--folder", str(tmp_path), "--out", str(tmp_path / "r"), "--arch", "seed-cnn"]
    assert main(argv) == 0
    assert seen == [False]
    assert main(["train", "--folder", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    assert seen == [False, True]


def test_help_names_the_default():
    parser = build_parser()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    assert f"Default {DEFAULT_ARCH}:" in " ".join(out.getvalue().split())


def test_an_architecture_typed_in_other_case_is_recorded_as_registered(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(run, "_train", lambda cfg, spec, mode, _: seen.append((cfg.arch, mode)))
    run.train(TrainConfig(out=tmp_path, arch="Seed-CNN"))
    assert seen == [("seed-cnn", "scratch")]
