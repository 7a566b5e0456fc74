"""The local engine on its own: any model callable over posters decoded here, in order, with
unreadable posters reported by position; and how many decoding processes it starts."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from postergenre._cpu import default_workers
from postergenre.data.preprocess import UNIT_RANGE, InputSpec
from postergenre.engines.local import PROCESS_MIN_POSTERS, LocalEngine, decoding_workers
from postergenre.errors import UserError
from tests.conftest import make_poster

SPEC = InputSpec(8, 12, "squash", UNIT_RANGE)


def _mean_colour(pixels: np.ndarray, texts: list[str] | None) -> np.ndarray:
    """A stand-in model: each poster's mean red, green and blue."""
    assert texts is None  # this model reads no text
    return pixels.reshape(len(pixels), -1, 3).mean(axis=1).astype(np.float32)


@pytest.fixture
def posters(tmp_path) -> list[Path]:
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (120, 120, 120), (250, 250, 0)]
    paths = [make_poster(tmp_path / f"p{i}.png", c, seed=i) for i, c in enumerate(colours)]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    paths.insert(2, tmp_path / "broken.png")
    return paths


@pytest.mark.parametrize("workers", [0, 1])
def test_values_keep_the_order_and_name_the_unreadable_by_position(posters, workers):
    engine = LocalEngine(SPEC, _mean_colour, 3)
    ok, values, errors = engine.values(posters, False, batch_size=2, workers=workers, show=False)
    assert list(ok) == [0, 1, 3, 4, 5]
    assert values.shape == (5, 3)
    assert list(values.argmax(axis=1)[:3]) == [0, 1, 2]  # red, green, blue, in order
    assert list(errors) == [2] and "broken.png" in errors[2]


def test_the_decode_cache_gives_the_same_values(posters, tmp_path):
    engine = LocalEngine(SPEC, _mean_colour, 3, cache_dir=tmp_path / "cache")
    fresh = engine.values(posters, False, batch_size=4, workers=0, show=False)
    cached = engine.values(posters, True, batch_size=4, workers=1, show=False)
    assert list(cached[0]) == list(fresh[0]) and cached[2].keys() == fresh[2].keys()
    np.testing.assert_array_equal(cached[1], fresh[1])
    assert (tmp_path / "cache" / "posters-8x12-squash").is_dir()


def test_a_batch_of_unreadable_posters_gives_an_empty_row_block(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    engine = LocalEngine(SPEC, _mean_colour, 3)
    [(batch, values)] = list(engine.scored([tmp_path / "a.png"], False, 4, 0))
    assert batch.paths == [] and batch.size == 1 and values.shape == (0, 3)


def test_a_batch_size_below_one_is_refused(posters):
    engine = LocalEngine(SPEC, _mean_colour, 3)
    with pytest.raises(UserError, match="batch size must be 1 or more"):
        engine.values(posters, False, batch_size=0, show=False)


def test_decoding_workers(monkeypatch):
    monkeypatch.setattr("postergenre.engines.local.available_cores", lambda: 8)
    assert decoding_workers(3, 1) == 3 and decoding_workers(0, 10_000) == 0
    assert decoding_workers(None, PROCESS_MIN_POSTERS - 1) == 0  # a thread beside the model
    assert decoding_workers(None, PROCESS_MIN_POSTERS) == default_workers()
    with pytest.raises(UserError, match="workers must be 0 or more"):
        decoding_workers(-1, 100)


def test_more_decoding_workers_than_cores_are_capped_with_one_warning(monkeypatch, capsys):
    monkeypatch.setattr("postergenre.engines.local.available_cores", lambda: 2)
    assert decoding_workers(64, 1000) == 2 and decoding_workers(2, 1000) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == "warning: 64 decoding workers asked for, 2 cores here: using 2"


def test_predict_workers_64_starts_no_more_processes_than_cores(tmp_path, monkeypatch, capsys):
    from postergenre.cli import main
    from tests.conftest import make_seed_bundle, make_tiny_folder

    started: list[int] = []
    real = ProcessPoolExecutor

    def counting(workers, **kwargs):
        started.append(workers)
        return real(workers, **kwargs)

    monkeypatch.setattr("postergenre.engines.local.ProcessPoolExecutor", counting)
    monkeypatch.setattr("postergenre.engines.local.available_cores", lambda: 2)
    folder = make_tiny_folder(tmp_path / "posters", (2, 0, 0))
    bundle = make_seed_bundle(tmp_path / "model")
    argv = ["predict", str(folder), "--model", str(bundle), "--runtime", "torch", "--workers"]
    assert main([*argv, "64", "--out", str(tmp_path / "p.csv")]) == 0
    assert started == [2]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == ["warning: 64 decoding workers asked for, 2 cores here: using 2"]
