"""`postergenre serve --collection`: which folders it opens, and its one-line refusals."""

from __future__ import annotations

import pytest

from postergenre.cli import main
from postergenre.serving import server
from tests.serving.test_server import _NeverRun


@pytest.fixture
def no_uvicorn(monkeypatch):
    """uvicorn's server stood in for: the app is recorded, nothing listens."""
    _NeverRun.apps = []
    monkeypatch.setattr(server, "make_server", _NeverRun)
    return _NeverRun


@pytest.fixture
def model_args(multi_predictor) -> list[str]:
    return ["--model", str(multi_predictor.folder), "--runtime", "torch", "--port", "0"]


def test_serve_opens_an_index_folder_as_a_collection(
    collection_folder, model_args, no_uvicorn, capsys
):
    assert main(["serve", *model_args, "--collection", str(collection_folder)]) == 0
    out = capsys.readouterr().out
    assert "collection of 48 posters at http://127.0.0.1:" in out
    assert f"corrections go to {collection_folder / 'corrections.csv'}" in out
    [app] = no_uvicorn.apps
    assert app.state.server.collection.collection.folder == collection_folder
    assert len(app.state.server.index) == 48  # its index also finds similar posters


def test_serve_index_with_a_bare_collection_flag_opens_that_index(
    collection_folder, model_args, no_uvicorn, capsys
):
    argv = ["serve", *model_args, "--index", str(collection_folder), "--collection"]
    assert main(argv) == 0
    [app] = no_uvicorn.apps
    assert app.state.server.collection is not None


def _refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_a_plain_poster_folder_is_indexed_in_the_background_then_opened(
    serving_posters, model_args, no_uvicorn, capsys
):
    assert main(["serve", *model_args, "--collection", str(serving_posters)]) == 0
    inner = serving_posters / ".postergenre-index"
    assert f"/collection once {inner} is built" in " ".join(capsys.readouterr().out.split())
    [app] = no_uvicorn.apps
    state = app.state.server
    assert state.collection is None and state.collection_folder == inner  # opened once built
    assert state.index_job.out == inner
    assert not inner.exists()  # nothing is written before the server starts


def test_two_different_indexes_or_a_bare_flag_alone_are_refused(
    collection_folder, tmp_path, model_args, no_uvicorn, capsys
):
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.json").write_text("{}")
    argv = ["serve", *model_args, "--index", str(other), "--collection", str(collection_folder)]
    assert "are different indexes; give --collection alone" in _refused(argv, capsys)
    bare = _refused(["serve", *model_args, "--collection"], capsys)
    assert bare.endswith("--collection without a folder needs --index INDEX")
    assert no_uvicorn.apps == []
