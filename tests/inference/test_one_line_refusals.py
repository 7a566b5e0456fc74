"""A run that fails says only why: no status or warning line ("starting afresh", "joining the
Ray cluster", "dropped a torn line", "falling back") comes before the one error line."""

from __future__ import annotations

from pathlib import Path

import pytest

from postergenre.cli import main
from postergenre.errors import UserError
from postergenre.inference import Predictor
from postergenre.inference.journal import journal_path
from tests.conftest import make_poster, make_seed_bundle
from tests.models.test_tampered_bundles import _seed_bundle_with


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_seed_bundle(tmp_path_factory.mktemp("refusals") / "model")


@pytest.fixture
def broken_model(monkeypatch):
    """Every prediction fails, as a model that breaks mid-run does."""

    def broken(self, pixels, texts=None):
        raise UserError("the model broke")

    monkeypatch.setattr(Predictor, "_run", broken)


def _posters(folder: Path, n: int = 3) -> Path:
    for i in range(n):
        make_poster(folder / f"p{i}.png", (40 * i, 90, 200), seed=i)
    return folder


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("postergenre predict: error: ")
    return lines[0]


def test_resume_with_nothing_to_resume_then_failing_says_only_why(
    bundle, tmp_path, broken_model, capsys
):
    predictor = Predictor.from_pretrained(bundle, runtime="torch")
    folder = _posters(tmp_path / "posters")
    with pytest.raises(UserError, match="the model broke"):
        predictor.predict_to(folder, tmp_path / "p.csv", resume=True, progress_bar=False)
    assert capsys.readouterr().err == ""  # the caller reports the error, alone


def test_resume_over_a_torn_line_then_failing_says_only_why(bundle, tmp_path, monkeypatch, capsys):
    folder = _posters(tmp_path / "posters", 4)
    out = tmp_path / "p.csv"
    predictor = Predictor.from_pretrained(bundle, runtime="torch")
    run, calls = predictor._run, []

    def run_then_stop(pixels, texts=None):
        calls.append(1)
        if len(calls) > 1:
            raise UserError("the model broke")
        return run(pixels, texts)

    monkeypatch.setattr(predictor, "_run", run_then_stop)
    with pytest.raises(UserError, match="the model broke"):
        predictor.predict_to(folder, out, batch_size=2, workers=0, progress_bar=False)
    with journal_path(out).open("ab") as handle:
        handle.write(b'{"path": "torn')
    capsys.readouterr()
    with pytest.raises(UserError, match="the model broke"):
        predictor.predict_to(folder, out, resume=True, progress_bar=False)
    assert capsys.readouterr().err == ""
    with journal_path(out).open("ab") as handle:  # torn again, and resumed with success:
        handle.write(b'{"path": "torn')
    monkeypatch.setattr(predictor, "_run", run)  # now the warning comes, after the work
    predictor.predict_to(folder, out, resume=True, progress_bar=False)
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: ") and "cut short" in line


@pytest.mark.parametrize("runtime", ["auto", "torch"])
def test_a_collection_with_bad_weights_is_refused_before_any_progress(runtime, tmp_path, capsys):
    folder = _seed_bundle_with(tmp_path, "int64 weights")
    posters = _posters(tmp_path / "posters", 3)
    argv = ["predict", str(posters), "--model", str(folder), "--runtime", runtime]
    assert main([*argv, "--out", str(tmp_path / "p.csv")]) == 2
    assert "classifier.weight is int64" in _error_line(capsys)
    assert not list(tmp_path.glob("p.csv*"))


@pytest.mark.parametrize("address", [None, "127.0.0.1:1"])
def test_ray_that_cannot_start_or_join_says_only_why(address, monkeypatch, capsys):
    ray = pytest.importorskip("ray")
    from postergenre.engines import ray_cluster

    def refuse(*args, **kwargs):
        raise ConnectionError("no cluster here")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray_cluster, "_check_reachable", lambda *args: None)
    session = ray_cluster.ray_session(address)
    with pytest.raises(ray_cluster.RayRunFailed, match="no cluster here"), session:
        pass
    assert capsys.readouterr().err == ""


def test_an_output_folder_that_cannot_be_made_is_refused_in_one_line(bundle, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "p.csv"
    argv = ["predict", str(_posters(tmp_path / "posters")), "--model", str(bundle)]
    assert main([*argv, "--runtime", "torch", "--out", str(out)]) == 2
    assert "cannot write" in _error_line(capsys)


@pytest.mark.parametrize("runtime", ["torch", "onnx", "auto"])
def test_serve_refuses_bad_weights_before_listening_for_every_runtime(runtime, tmp_path, capsys):
    from tests.models.test_bundle_files import deadline

    folder = _seed_bundle_with(tmp_path, "int64 weights")
    with deadline(60):  # a server that starts instead of refusing fails here, never hangs
        code = main(["serve", "--port", "0", "--runtime", runtime, "--model", str(folder)])
    assert code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("postergenre serve: error: ") and "classifier.weight is int64" in line
