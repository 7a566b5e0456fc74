"""The Ray engine (`--engine ray`): the same rows, probabilities, embeddings and skipped-poster
reports as the local engine, on one Ray started once for the module. The contract checks
(flags refused, the missing extra) run without Ray installed."""

from __future__ import annotations

import builtins
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from postergenre._cpu import available_cores
from postergenre.cli import main
from postergenre.data.records import PosterRecord
from postergenre.engines.ray_cluster import (
    RayRunFailed,
    RayUnavailable,
    _check_reachable,
    check_engine,
)
from postergenre.errors import UserError
from postergenre.inference import Predictor

MODEL = "imdb-20-fast"  # Lite0: the quickest bundled model
# Real posters the engines are compared on. With the 2 unreadable files and 2 workers these
# make 4 Ray blocks of 33 (two per actor), each more than one model batch of 32: rows come back
# from both actors, batch by batch, and are put back in order, as they did with 200 posters.
REAL_POSTERS = 130


def _stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# -- the contract, with or without Ray --------------------------------------------------------


@pytest.fixture
def without_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing ray fails, as on an install without the extra."""
    real_import = builtins.__import__

    def refuse(name: str, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", refuse)


def test_ray_engine_without_the_extra_says_how_to_install_it(without_ray, tmp_path, capsys):
    with pytest.raises(RayUnavailable, match=r"pip install 'postergenre\[ray\]'"):
        check_engine("ray")
    check_engine("local")  # the local engine needs no Ray
    poster = tmp_path / "p.jpg"
    poster.write_bytes(b"unused")
    code = main(["predict", str(tmp_path), "--out", str(tmp_path / "p.csv"), "--engine", "ray"])
    assert code == 2
    [line] = _stderr_lines(capsys.readouterr().err)
    assert line.startswith("postergenre predict: error:")
    assert "pip install 'postergenre[ray]'" in line
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("command", ["predict", "index"])
def test_address_without_the_ray_engine_is_refused(command, tmp_path, capsys):
    if command == "predict":
        argv = ["predict", str(tmp_path), "--out", str(tmp_path / "p.csv")]
    else:
        argv = ["index", "--folder", str(tmp_path), "--out", str(tmp_path / "index")]
    assert main([*argv, "--address", "127.0.0.1:6379"]) == 2
    [line] = _stderr_lines(capsys.readouterr().err)
    assert line.startswith(f"postergenre {command}: error:")
    assert "--engine ray" in line


def test_the_python_api_refuses_what_the_cli_refuses(tmp_path):
    predictor = Predictor.from_pretrained(MODEL)
    with pytest.raises(UserError, match="goes with the ray engine only"):
        predictor.predict_to(tmp_path, tmp_path / "p.csv", address="head:6379")
    with pytest.raises(UserError, match="unknown engine 'spark'"):
        predictor.predict_to(tmp_path, tmp_path / "p.csv", engine="spark")
    assert not (tmp_path / "p.csv.partial").exists()


def test_an_address_nobody_answers_fails_fast_in_one_line(tmp_path, capsys):
    with pytest.raises(RayRunFailed, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:1"):
        _check_reachable("127.0.0.1:1")
    pytest.importorskip("ray")
    argv = ["predict", str(tmp_path), "--out", str(tmp_path / "p.csv"), "--engine", "ray"]
    assert main([*argv, "--address", "127.0.0.1:1"]) == 2  # before any model loads
    [line] = _stderr_lines(capsys.readouterr().err)
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in line


# -- on Ray ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_here():
    """One Ray for the whole module (started the way the engine starts it); every run below
    uses it instead of starting its own."""
    pytest.importorskip("ray")
    from postergenre.engines.ray_cluster import ray_session

    with ray_session():
        yield


@pytest.fixture(scope="module")
def shared_folder(shared_data, tmp_path_factory) -> Path:
    """REAL_POSTERS real posters (links), one truncated copy and one file that is no image."""
    folder = tmp_path_factory.mktemp("ray-posters")
    posters = sorted((shared_data / "images").glob("*.jpg"))[:REAL_POSTERS]
    for poster in posters:
        (folder / poster.name).symlink_to(poster)
    (folder / "tt_truncated.jpg").write_bytes(posters[0].read_bytes()[:1500])
    (folder / "tt_notes.jpg").write_text("these are notes, not a poster\n")
    return folder


def _run(argv: list[str], capsys) -> list[str]:
    assert main(argv) == 0
    return _stderr_lines(capsys.readouterr().err)


@pytest.mark.integration
def test_ray_predictions_match_the_local_engine(ray_here, shared_folder, tmp_path, capsys):
    import pyarrow.parquet as pq

    local_out, ray_out = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    base = ["predict", str(shared_folder), "--model", MODEL]
    local_err = _run([*base, "--out", str(local_out)], capsys)
    workers = str(min(2, available_cores()))
    ray_err = _run([*base, "--out", str(ray_out), "--engine", "ray", "--workers", workers], capsys)

    local, ray = pq.read_table(local_out), pq.read_table(ray_out)
    assert ray.column_names == local.column_names
    assert ray.column("path").to_pylist() == local.column("path").to_pylist()  # rows, in order
    assert ray.num_rows == REAL_POSTERS
    genres = local.column_names[1:-1]
    diff = max(
        float(np.abs(ray.column(g).to_numpy() - local.column(g).to_numpy()).max()) for g in genres
    )
    assert diff <= 1e-5
    assert ray.column("predicted").to_pylist() == local.column("predicted").to_pylist()

    def reports(lines: list[str]) -> list[str]:
        return [line for line in lines if line.startswith("warning:")]

    assert reports(ray_err) == reports(local_err)
    assert [line.split(": ")[1] for line in reports(ray_err)] == ["skipped " + str(p) for p in (
        shared_folder / "tt_notes.jpg", shared_folder / "tt_truncated.jpg")]  # fmt: skip

    def summary(lines: list[str], out: Path) -> list[str]:
        return [line.replace(str(out), "OUT") for line in lines if line.startswith("wrote")]

    assert summary(ray_err, ray_out) == summary(local_err, local_out)
    assert "skipped 2 unreadable" in summary(ray_err, ray_out)[0]
    done = f"predicting: {REAL_POSTERS + 2}/{REAL_POSTERS + 2} done"
    assert any(line.startswith(done) for line in ray_err)  # progress

    import ray as ray_module

    assert ray_module.is_initialized()  # a Ray the run did not start is left running


@pytest.mark.integration
def test_ray_index_embeds_like_the_local_engine(ray_here, shared_folder, tmp_path, capsys):
    from postergenre.inference.similarity import PosterIndex

    paths = [*sorted(shared_folder.glob("*.jpg"))[:40], shared_folder / "tt_notes.jpg"]
    records = [PosterRecord(p.stem, p, ("Drama",)) for p in paths]
    local = PosterIndex.build(records, cache_dir=tmp_path / "local", progress=False)
    local_err = capsys.readouterr().err
    ray = PosterIndex.build(
        records, cache_dir=tmp_path / "ray", progress=False, engine="ray", workers=1
    )
    ray_err = capsys.readouterr().err

    assert [item["path"] for item in ray.items] == [item["path"] for item in local.items]
    assert len(ray) == 40
    assert float(np.abs(ray.vectors - local.vectors).max()) <= 1e-5
    skipped = [line for line in _stderr_lines(ray_err) if line.startswith("warning:")]
    assert skipped == [line for line in _stderr_lines(local_err) if line.startswith("warning:")]
    assert any("tt_notes.jpg" in line for line in skipped)


def test_train_engine_ray_fits_the_same_linear_probe(ray_here, tiny_folder, tmp_path, capsys):
    cards = {}
    for engine in ("local", "ray"):
        run = tmp_path / engine
        argv = ["train", "--folder", str(tiny_folder), "--arch", "efficientnet-lite0"]
        argv += ["--out", str(run), "--cache-dir", str(tmp_path / f"cache-{engine}")]
        assert main([*argv, "--engine", engine]) == 0
        assert json.loads((run / "config.json").read_text())["engine"] == engine
        cards[engine] = json.loads((run / "model" / "model.json").read_text())
    capsys.readouterr()
    assert cards["ray"]["training"]["C"] == cards["local"]["training"]["C"]
    assert cards["ray"]["metrics"]["val"]["accuracy"] == pytest.approx(
        cards["local"]["metrics"]["val"]["accuracy"], abs=1e-9
    )


def test_more_workers_than_the_cluster_has_cpus_are_refused(ray_here):
    from postergenre.engines.ray_cluster import plan_workers

    cpus = available_cores()  # the Ray started here has every core
    with pytest.raises(UserError, match=f"the Ray cluster has {cpus}"):
        plan_workers(cpus + 1)
    assert plan_workers(None).workers == cpus
    assert plan_workers(1).threads == cpus  # one actor gets every core of the node


def test_ray_engine_needs_a_file_to_stream_into(tmp_path, capsys):
    pytest.importorskip("ray")
    poster = tmp_path / "one.jpg"
    shutil.copyfile(Path(__file__), poster)  # never read: refused before
    assert main(["predict", str(poster), "--engine", "ray"]) == 2
    [line] = _stderr_lines(capsys.readouterr().err)
    assert "--out FILE" in line
