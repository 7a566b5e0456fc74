"""The seams of the command line: errors and Ctrl-C handled once in `main`, the hints the library
errors carry, the library rules the commands call (where predictions go, the train config from
the parsed arguments) and the --cache / --no-cache pair."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from postergenre.cli import main
from postergenre.cli.main import EXIT_INTERRUPTED, EXIT_USAGE, build_parser
from postergenre.data.csv_files import LabelFileTooLarge, label_limit_bytes
from postergenre.data.labels import PosterSourceMissing
from postergenre.data.url_list import IdColumnMissing, UrlColumnMissing
from postergenre.engines.ray_cluster import AddressWithoutRay
from postergenre.errors import UserError
from postergenre.inference.journal import UnfinishedPredictions, journal_path
from postergenre.inference.predictions import FOLDER_OUTPUT, prediction_output
from postergenre.serving.server import PortInUse
from tests.conftest import make_poster

COMMANDS = ["train", "evaluate", "label-issues", "predict", "index", "similar", "duplicates"]
COMMANDS += ["explain"]
COMMANDS += ["export", "serve", "models", "cache", "download"]


def _stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


# -- errors and interrupts, handled once -----------------------------------------------------


def _hinted_errors() -> list[tuple[type[UserError], str]]:
    from postergenre.training.run import NothingToResume, RunFolderInUse

    return [
        (UnfinishedPredictions, "pass --resume to go on with it, or delete it"),
        (RunFolderInUse, "pass --resume to continue it, or choose another --out"),
        (NothingToResume, "run without --resume to start it"),
        (PortInUse, "choose another with --port (make demo PORT=N)"),
        (PosterSourceMissing, "use --labels CSV or --folder DIR"),
        (LabelFileTooLarge, "or pass --max-labels-mb"),
        (UrlColumnMissing, "name it with --url-column"),
        (IdColumnMissing, "name it with --id-column"),
        (AddressWithoutRay, "--address goes with --engine ray"),
    ]


@pytest.mark.parametrize("error, hint", _hinted_errors(), ids=lambda v: getattr(v, "__name__", ""))
def test_a_hinted_error_is_message_then_hint_on_one_line(error, hint, monkeypatch, capsys):
    from postergenre.cli import models

    def fail(args):
        raise error("something is wrong\nwith this")

    monkeypatch.setattr(models, "_run", fail)
    assert main(["models"]) == EXIT_USAGE
    assert _stderr_lines(capsys) == [
        f"postergenre models: error: something is wrong with this; {hint}"
    ]


def test_an_error_without_hint_is_its_message_only(monkeypatch, capsys):
    from postergenre.cli import models

    def fail(args):
        raise UserError("plain")

    monkeypatch.setattr(models, "_run", fail)
    assert main(["models"]) == EXIT_USAGE
    assert _stderr_lines(capsys) == ["postergenre models: error: plain"]


def test_an_address_without_ray_names_the_flags_before_any_work(tmp_path, capsys):
    poster = make_poster(tmp_path / "p.png", (10, 20, 30))
    assert main(["predict", str(poster), "--address", "auto"]) == EXIT_USAGE
    [line] = _stderr_lines(capsys)
    assert line.startswith("postergenre predict: error: an address names a Ray cluster")
    assert line.endswith("; --address goes with --engine ray")


def test_ctrl_c_in_download_says_once_that_the_work_is_kept(tmp_path, monkeypatch, capsys):
    from postergenre.data import download

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "download_posters", interrupted)
    out = tmp_path / "set"
    assert main(["download", "--labels", str(tmp_path / "l.csv"), "--out", str(out)]) == 130
    assert _stderr_lines(capsys) == [
        f"interrupted; what is done is kept in {out}: run the same command again to resume"
    ]


def test_ctrl_c_in_predict_says_once_where_the_predictions_so_far_are(
    tmp_path, monkeypatch, capsys
):
    from postergenre.inference import Predictor

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Predictor, "from_pretrained", interrupted)
    folder = tmp_path / "posters"
    make_poster(folder / "a.png", (200, 10, 10))
    out = tmp_path / "preds.csv"
    argv = ["predict", str(folder), "--out", str(out)]
    assert main(argv) == EXIT_INTERRUPTED
    assert _stderr_lines(capsys) == ["interrupted"]  # no journal yet: nothing to resume
    journal_path(out).write_text("")
    assert main(argv) == EXIT_INTERRUPTED
    assert _stderr_lines(capsys) == [
        f"interrupted; predictions so far are in {journal_path(out)}: add --resume to go on"
    ]


def test_ctrl_c_in_a_command_without_advice_is_one_word(monkeypatch, capsys):
    from postergenre.cli import models

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_run", interrupted)
    assert main(["models"]) == EXIT_INTERRUPTED
    assert _stderr_lines(capsys) == ["interrupted"]


def test_a_closed_pipe_is_a_clean_exit(monkeypatch):
    from postergenre.cli import models

    def closed(args):
        raise BrokenPipeError

    monkeypatch.setattr(models, "_run", closed)
    assert main(["models"]) == 0


def test_help_lists_the_commands_in_their_order():
    lines = build_parser().format_help().splitlines()
    # argparse indents the sub-commands by 4 and wrapped help lines further
    listed = [line.split()[0] for line in lines if line[:4] == "    " and line[4] != " "]
    assert listed == COMMANDS


def test_the_module_entry_point_runs_main():
    result = subprocess.run(
        [sys.executable, "-m", "postergenre", "cache", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "usage: postergenre cache" in result.stdout


# -- --cache / --no-cache ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, cache", [([], False), (["--cache"], True), (["--no-cache"], False)]
)
def test_no_cache_is_the_explicit_form_of_the_default(flags, cache):
    args = build_parser().parse_args(["predict", "a.jpg", *flags])
    assert args.cache is cache
    assert not hasattr(args, "no_cache")


def test_cache_and_no_cache_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["predict", "a.jpg", "--cache", "--no-cache"])
    assert exit.value.code == EXIT_USAGE
    assert "not allowed with argument --cache" in capsys.readouterr().err


# -- the library rules the commands call ------------------------------------------------------


def test_a_folder_without_out_goes_to_predictions_csv(tmp_path):
    folder = tmp_path / "posters"
    folder.mkdir()
    poster = tmp_path / "one.png"
    assert prediction_output([str(folder)], None) == FOLDER_OUTPUT == Path("predictions.csv")
    assert prediction_output([poster, str(folder)], tmp_path / "x.jsonl") == tmp_path / "x.jsonl"
    assert prediction_output([poster], None) is None  # printed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"resume": True}, "--resume goes on with an unfinished --out FILE: name the FILE"),
        (
            {"engine": "ray"},
            "--engine ray streams a collection into a file: name it with --out FILE",
        ),
    ],
)
def test_resume_and_ray_need_an_output_file(tmp_path, kwargs, message):
    with pytest.raises(UserError) as caught:
        prediction_output([tmp_path / "one.png"], None, **kwargs)
    assert str(caught.value) == message


def test_an_unknown_output_format_is_refused_for_a_folder_too(tmp_path):
    with pytest.raises(UserError, match="cannot tell the format"):
        prediction_output([tmp_path], tmp_path / "preds.xlsx")


def test_resume_without_out_is_refused_through_main(tmp_path, capsys):
    poster = make_poster(tmp_path / "p.png", (1, 2, 3))
    assert main(["predict", str(poster), "--resume"]) == EXIT_USAGE
    assert _stderr_lines(capsys) == [
        "postergenre predict: error: --resume goes on with an unfinished --out FILE: name the FILE"
    ]


def test_train_config_from_the_parsed_arguments(tmp_path):
    from postergenre.training.run import TrainConfig

    argv = ["train", "--folder", str(tmp_path), "--out", str(tmp_path / "run")]
    argv += ["--arch", "efficientnet-lite0", "--genres", "Action, Drama", "--epochs", "3"]
    argv += ["--no-augment", "--no-calibrate", "--max-labels-mb", "2", "--engine", "local"]
    argv += ["--lr", "0.01", "--text", "--resume", "--balance", "none", "--mode", "finetune"]
    config = TrainConfig.from_args(build_parser().parse_args(argv))
    assert config == TrainConfig(
        out=tmp_path / "run",
        folder=tmp_path,
        arch="efficientnet-lite0",
        genres=["Action", "Drama"],
        epochs=3,
        augment=False,
        calibrate=False,
        max_label_bytes=2 * 1024 * 1024,
        lr=0.01,
        text=True,
        resume=True,
        balance="none",
        mode="finetune",
    )
    defaults = TrainConfig.from_args(build_parser().parse_args(argv[:5]))
    assert defaults == TrainConfig(out=tmp_path / "run", folder=tmp_path)


def test_train_config_from_a_mapping_ignores_other_names(tmp_path):
    from postergenre.training.run import TrainConfig

    config = TrainConfig.from_args({"out": tmp_path, "seed": 7, "no_augment": True, "x": 1})
    assert config == TrainConfig(out=tmp_path, seed=7, augment=False)


def test_label_limits_in_megabytes():
    assert label_limit_bytes(None) is None
    assert label_limit_bytes(0.5) == 512 * 1024
    assert label_limit_bytes(0) == 0


def test_cache_clear_prints_bytes_in_si_units(tmp_path, capsys):
    assert main(["cache", "clear", "--cache-dir", str(tmp_path / "none")]) == 0
    assert capsys.readouterr().out == "cleared the cache: 0 B freed\n"


def test_the_environment_label_limit_goes_through_the_same_rule(tmp_path, monkeypatch):
    from postergenre.data.csv_files import LABELS_LIMIT_ENV
    from postergenre.data.labels import read_label_csv

    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Genre\n" + "tt1,Action\n" * 200)  # 2,209 bytes
    monkeypatch.setenv(LABELS_LIMIT_ENV, str(2000 / 1024 / 1024))
    with pytest.raises(LabelFileTooLarge):
        read_label_csv(labels)
    monkeypatch.setenv(LABELS_LIMIT_ENV, "0")  # zero is a limit, not "the default"
    with pytest.raises(LabelFileTooLarge):
        read_label_csv(labels)
    monkeypatch.setenv(LABELS_LIMIT_ENV, "lots")
    with pytest.raises(UserError, match="is not a number of megabytes"):
        read_label_csv(labels)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "70000"],
        ["serve", "--port", "-1"],
        ["serve", "--max-wait-ms", "-1"],
        ["serve", "--max-upload-mb", "0"],
        ["serve", "--max-upload-mb", "nan"],
        ["serve", "--max-megapixels", "inf"],
        ["serve", "--request-timeout", "-5"],
        ["serve", "--max-batch", "0"],
        ["train", "--out", "run", "--lr", "-1"],
        ["train", "--out", "run", "--seed", "-3"],
        ["download", "--labels", "l.csv", "--out", "o", "--rate", "inf"],
        ["download", "--labels", "l.csv", "--out", "o", "--retries", "-1"],
        ["evaluate", "--labels", "l.csv", "--max-labels-mb", "-2"],
        ["predict"],
    ],
)
def test_a_bad_command_line_is_refused_in_one_line_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"postergenre {argv[0]}: error: ")
    assert lines[0].endswith(f"(see 'postergenre {argv[0]} --help')")


@pytest.mark.parametrize("name", ["x" * 300 + ".jpg", "~nosuchuser-pg/a.jpg"])
def test_a_poster_name_the_file_system_cannot_hold_is_one_line(name, capsys):
    assert main(["predict", name]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("postergenre predict: error: "), lines


def test_a_folder_named_with_a_tilde_writes_predictions_csv(tmp_path, monkeypatch):
    from postergenre.inference.predictions import FOLDER_OUTPUT, prediction_output

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "posters").mkdir()
    assert prediction_output(["~/posters"], None) == FOLDER_OUTPUT
