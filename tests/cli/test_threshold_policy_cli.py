"""`--threshold-policy` through the command line, on a tiny multi-label seed bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from postergenre.cli import main
from tests.conftest import GENRE_COLOURS, make_poster, make_seed_bundle

GENRES = ("Action", "Comedy", "Drama")
PER_GENRE = (0.2, 0.4, 0.6)
SHARED = (0.3, 0.3, 0.3)


@pytest.fixture(scope="module")
def multi_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded (untrained) multi-label seed-cnn bundle that records both policies."""
    return make_seed_bundle(
        tmp_path_factory.mktemp("multi") / "model",
        GENRES,
        task="multi",
        threshold_policies={"shared": SHARED, "per-genre": PER_GENRE},
    )


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 posters with one to three genres each, as a label CSV beside images/."""
    root = tmp_path_factory.mktemp("labelled")
    sets = ["Action|Drama", "Comedy", "Drama", "Action|Comedy|Drama"]
    lines = ["imdbId,Genre"]
    for i in range(12):
        genres = sets[i % 4]
        colour = GENRE_COLOURS[genres.split("|")[0]]
        make_poster(root / "images" / f"tt{i:07d}.png", colour, seed=100 + i)
        lines.append(f"tt{i:07d},{genres}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _evaluate(bundle: Path, data: Path, capsys, *extra: str) -> dict:
    argv = ["evaluate", "--model", str(bundle), "--labels", str(data / "labels.csv"),
            "--images", str(data / "images"), "--runtime", "torch", "--json", *extra]  # fmt: skip
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluate_switches_policy_and_reports_them_all(multi_bundle, labelled, tmp_path, capsys):
    default = _evaluate(multi_bundle, labelled, capsys)
    assert default["threshold_policy"] == "card"
    assert {row["threshold"] for row in default["per_genre"].values()} == {0.5}
    out = tmp_path / "report"
    chosen = _evaluate(multi_bundle, labelled, capsys, "--threshold-policy", "per-genre",
                       "--out", str(out))  # fmt: skip
    assert chosen["threshold_policy"] == "per-genre"
    assert [row["threshold"] for row in chosen["per_genre"].values()] == list(PER_GENRE)
    # the same probabilities, so every policy's point agrees between the two runs
    assert chosen["threshold_policies"] == default["threshold_policies"]
    assert chosen["micro_f1"] == pytest.approx(
        chosen["threshold_policies"]["per-genre"]["micro_f1"]
    )
    for key in ("hamming_loss", "subset_accuracy"):
        assert 0 <= chosen[key] <= 1 and key in chosen["baselines"]["no_genre"]
    assert len(chosen["threshold_sweep"]) == 19
    written = json.loads((out / "metrics.json").read_text())
    assert written["threshold_plot"] == "threshold_policy.png"
    assert (out / "threshold_policy.png").is_file()


def test_the_text_report_names_the_policy_and_the_baselines(multi_bundle, labelled, capsys):
    argv = ["evaluate", "--model", str(multi_bundle), "--labels", str(labelled / "labels.csv"),
            "--images", str(labelled / "images"), "--runtime", "torch",
            "--threshold-policy", "shared"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "model, shared thresholds" in text and "shared (in use)" in text
    assert "baseline: no genre" in text and "Hamming loss" in text
    assert "one shared threshold (every 0.1" in text


CASES = [("card", (0.5,) * 3), ("shared", SHARED), ("per-genre", PER_GENRE)]


@pytest.mark.parametrize(("policy", "thresholds"), CASES)
def test_predict_marks_the_policys_genres(multi_bundle, labelled, policy, thresholds, capsys):
    poster = labelled / "images" / "tt0000000.png"
    argv = ["predict", "--model", str(multi_bundle), str(poster), "--runtime", "torch",
            "--json", "--threshold-policy", policy]  # fmt: skip
    assert main(argv) == 0
    [entry] = json.loads(capsys.readouterr().out)
    probs = {g["genre"]: g["probability"] for g in entry["genres"]}
    expected = {g for g, t in zip(GENRES, thresholds, strict=True) if probs[g] >= t}
    assert set(entry["predicted"]) == expected
    assert all(np.isfinite(list(probs.values())))


def test_the_options_choices_are_the_library_policies():
    import argparse

    from postergenre.cli._args import add_threshold_policy_arg
    from postergenre.models.threshold_policy import DEFAULT_POLICY, THRESHOLD_POLICIES

    parser = argparse.ArgumentParser()
    add_threshold_policy_arg(parser)
    [action] = [a for a in parser._actions if a.dest == "threshold_policy"]
    assert tuple(action.choices) == THRESHOLD_POLICIES and action.default == DEFAULT_POLICY


def test_a_policy_the_model_cannot_follow_exits_2_in_one_line(labelled, tmp_path, capsys):
    single = make_seed_bundle(tmp_path / "single")
    bare = make_seed_bundle(tmp_path / "bare", task="multi")  # records no policies
    poster = str(labelled / "images" / "tt0000000.png")
    cases = [
        (single, "per-genre", "single-label"),
        (bare, "shared", "records no 'shared' thresholds"),
    ]
    for bundle, policy, message in cases:
        code = main(["predict", "--model", str(bundle), poster, "--threshold-policy", policy])
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    with pytest.raises(SystemExit) as exited:  # argparse refuses names outside the choices
        main(["predict", "--model", str(bare), poster, "--threshold-policy", "best"])
    assert exited.value.code == 2
    assert "invalid choice: 'best'" in capsys.readouterr().err


def test_serve_serves_the_policy_chosen(multi_bundle, monkeypatch, capsys):
    """`serve --threshold-policy` decides the page's and the API's predicted genres too."""
    from postergenre.serving import server
    from tests.serving.test_server import _NeverRun

    _NeverRun.apps = []
    monkeypatch.setattr(server, "make_server", _NeverRun)
    argv = ["serve", "--model", str(multi_bundle), "--runtime", "torch", "--port", "0"]
    assert main([*argv, "--threshold-policy", "per-genre"]) == 0
    [app] = _NeverRun.apps
    predictor = app.state.server.predictor
    assert predictor.threshold_policy == "per-genre"
    assert [round(float(t), 6) for t in predictor.thresholds] == list(PER_GENRE)
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main([*argv, "--threshold-policy", "nonsense"])
    assert refused.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
