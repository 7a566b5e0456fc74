"""What the command line promises: the predictions file, the cache commands, error messages that
name flags, progress in logs, help that explains, and a fast start."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from postergenre.cli import main
from tests.conftest import make_poster

GENRES = ["Action", "Comedy", "Drama"]


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory) -> Path:
    """A seed-cnn bundle folder (untrained weights are enough for the contracts)."""
    from tests.conftest import make_seed_bundle

    return make_seed_bundle(tmp_path_factory.mktemp("seed") / "model")


@pytest.fixture
def posters(tmp_path) -> Path:
    folder = tmp_path / "posters"
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        make_poster(folder / f"p{i}.png", colour, seed=i)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    return folder


def test_predict_folder_out_csv_contract(seed_run, posters, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    argv = ["predict", str(posters), "--model", str(seed_run), "--out", str(out)]
    assert main([*argv, "--runtime", "torch"]) == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "wrote 3 predictions" in err
    with out.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", *GENRES, "predicted"]  # path, a probability per genre, the set
    assert sorted(Path(r[0]).name for r in rows[1:]) == ["p0.png", "p1.png", "p2.png"]
    for row in rows[1:]:
        probs = [float(v) for v in row[1:4]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert row[4] == GENRES[probs.index(max(probs))]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_predict_out_other_formats(seed_run, posters, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"preds{suffix}"
    argv = ["predict", str(posters), "--model", str(seed_run), "--out", str(out)]
    assert main([*argv, "--runtime", "torch", "--no-cache"]) == 0
    assert out.is_file() and out.stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_glob_is_a_collection_and_top_limits_json(seed_run, posters, capsys):
    pattern = str(posters / "p*.png")
    argv = ["predict", pattern, "--model", str(seed_run), "--runtime", "torch", "--json"]
    assert main([*argv, "--top", "1"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert len(entries) == 3 and all(len(e["genres"]) == 1 for e in entries)


def test_only_cache_fills_the_cache_and_cache_commands(seed_run, tmp_path, capsys):
    folder = tmp_path / "many"
    for i in range(70):  # over the size from which a collection was once cached by default
        make_poster(folder / f"{i}.png", (3 * i, 100, 50), seed=i)
    cache = tmp_path / "cache"
    base = ["predict", str(folder), "--model", str(seed_run), "--runtime", "torch"]
    base += ["--cache-dir", str(cache), "--out", str(tmp_path / "p.csv")]
    assert main(base) == 0  # the cache is off by default
    assert main([*base, "--no-cache"]) == 0  # the explicit form of the default
    assert not any(cache.glob("posters-*"))
    assert main([*base, "--cache"]) == 0
    capsys.readouterr()
    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    info = capsys.readouterr().out
    assert "posters-150x150-squash" in info and "70" in info
    (folder / "0.png").unlink()
    assert main(["cache", "prune", "--cache-dir", str(cache)]) == 0
    assert "1" in capsys.readouterr().out
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "freed" in capsys.readouterr().out
    assert not any(cache.iterdir())


def test_run_folder_errors_name_the_flag_the_library_does_not(tiny_posters, tmp_path, capsys):
    from postergenre.errors import UserError
    from postergenre.training.run import TrainConfig, train

    out = tmp_path / "run"
    argv = ["train", "--folder", str(tiny_posters), "--arch", "efficientnet-lite0"]
    assert main([*argv, "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    for unused in ("epochs", "lr", "batch_size", "augment", "patience", "monitor"):
        assert unused not in config, unused  # a linear probe has none of these
    assert config["mode"] == "linear-probe" and config["balance"] == "weights"
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "already holds a run" in line and "--resume" in line and "--out" in line
    with pytest.raises(UserError) as caught:
        train(TrainConfig(out=out, folder=tiny_posters, arch="efficientnet-lite0", progress=False))
    assert "--" not in str(caught.value)  # the library says what, not which flag


def test_explain_genre_is_case_insensitive(seed_run, posters, tmp_path, capsys):
    out = tmp_path / "heat.png"
    argv = ["explain", str(posters / "p0.png"), "--model", str(seed_run), "--out", str(out)]
    assert main([*argv, "--genre", "comedy"]) == 0
    assert capsys.readouterr().out.startswith("Comedy (")
    assert out.is_file()


def test_busy_port_says_how_to_choose_another(seed_run, capsys):
    from postergenre.serving.server import bind_socket

    taken = bind_socket("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        code = main(["serve", "--model", str(seed_run), "--runtime", "torch", "--port", str(port)])
    finally:
        taken.close()
    assert code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--port" in line


def test_progress_lines_when_stderr_is_a_log(seed_run, tmp_path):
    folder = tmp_path / "log"
    for i in range(40):  # more than one batch of 32: a line per batch, then the final one
        make_poster(folder / f"{i}.png", (5 * i, 60, 90), seed=i)
    env = {**os.environ, "POSTERGENRE_PROGRESS_SECONDS": "0"}
    argv = ["predict", str(folder), "--model", str(seed_run), "--runtime", "torch"]
    argv += ["--out", str(tmp_path / "p.csv"), "--no-cache"]
    result = subprocess.run(
        [sys.executable, "-m", "postergenre", *argv],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("predicting")]
    assert len(lines) >= 2, result.stderr  # periodic lines, then the final one
    assert "ETA" in lines[0] and "img/s" in lines[0]
    assert "32/40" in lines[0] and "40/40 done" in lines[-1]


def test_evaluate_help_explains_both_tasks():
    result = subprocess.run(
        [sys.executable, "-m", "postergenre", "evaluate", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    text = " ".join(result.stdout.split())
    assert "Multi-label" in text and "mAP" in text and "confusion matrix" in text


def test_help_and_argument_errors_import_nothing_heavy():
    code = (
        "import sys\n"
        "from postergenre.cli import main\n"
        "try:\n"
        "    main(['predict', '--top', 'x', 'a.jpg'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 2\n"
        "heavy = [m for m in ('torch', 'sklearn', 'matplotlib', 'numpy') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_an_unknown_output_format_is_refused_before_any_work(seed_run, posters, tmp_path, capsys):
    out = tmp_path / "preds.xlsx"
    argv = ["predict", str(posters), "--model", str(seed_run), "--out", str(out)]
    assert main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "cannot tell the format" in line and not out.exists()
