"""`Predictor.predict_to`: streaming a collection into a file, on tiny generated posters."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from postergenre.cli import main
from postergenre.data.preprocess import UNIT_RANGE, InputSpec
from postergenre.data.sources import open_sources, poster_source
from postergenre.engines.decoding import decoded_batches, in_flight_batches
from postergenre.errors import UserError
from postergenre.inference import Predictor
from postergenre.inference.journal import PathSet, PredictionJournal, journal_path
from postergenre.inference.streaming import journal_start
from tests.conftest import make_poster, make_seed_bundle

GENRES = ["Action", "Comedy", "Drama"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_seed_bundle(tmp_path_factory.mktemp("stream") / "model")


@pytest.fixture(scope="module")
def predictor(bundle) -> Predictor:
    return Predictor.from_pretrained(bundle, runtime="torch")


def _posters(folder: Path, n: int) -> list[Path]:
    return [
        make_poster(folder / f"p{i:02d}.png", (6 * i, 90, 200 - 4 * i), seed=i) for i in range(n)
    ]


def _read_rows(path: Path) -> dict[str, list[float]]:
    """{path: probabilities in GENRES order} from any output format, read independently."""
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == ["path", *GENRES, "predicted"]
        return {r[0]: [float(v) for v in r[1:4]] for r in rows[1:]}
    if path.suffix == ".jsonl":
        items = [json.loads(line) for line in path.read_text().splitlines()]
        assert all(set(item) == {"path", "genres", "predicted"} for item in items)
        return {
            i["path"]: [{g["genre"]: g["probability"] for g in i["genres"]}[g] for g in GENRES]
            for i in items
        }
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    assert table.column_names == ["path", *GENRES, "predicted"]
    data = table.to_pydict()
    return {p: [data[g][i] for g in GENRES] for i, p in enumerate(data["path"])}


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith((".partial", ".tmp"))]


@pytest.mark.parametrize("suffix, workers", [(".csv", 1), (".jsonl", 0), (".parquet", 0)])
def test_streamed_rows_match_predict_and_leave_no_partial_file(
    predictor, tmp_path, suffix, workers
):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    folder = tmp_path / "posters"
    _posters(folder, 7)
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    expected = predictor.predict(folder, progress_bar=False)
    out = tmp_path / "out" / f"preds{suffix}"
    summary = predictor.predict_to(folder, out, workers=workers, batch_size=3, progress_bar=False)
    rows = _read_rows(out)
    assert list(rows) == expected.paths  # every readable poster once, in the folder's order
    np.testing.assert_allclose(list(rows.values()), expected.probabilities, atol=1e-6, rtol=0)
    assert summary.written == summary.rows == 7 and summary.resumed == 0
    assert dict(summary.skipped_by_reason) == {"not an image": 1}
    assert _leftovers(out.parent) == []


def test_unreadable_files_are_skipped_counted_by_reason_and_listed(predictor, tmp_path, capsys):
    folder = tmp_path / "posters"
    good = _posters(folder, 3)
    (folder / "empty.png").write_bytes(b"")
    (folder / "junk.jpg").write_text("hello")
    (folder / "cut.png").write_bytes(good[0].read_bytes()[:120])
    summary = predictor.predict_to(folder, tmp_path / "p.csv", workers=0, progress_bar=False)
    assert summary.written == 3
    assert dict(summary.skipped_by_reason) == {
        "empty file": 1,
        "not an image": 1,
        "corrupt or truncated image": 1,
    }
    assert sorted(Path(p).name for p in summary.skipped) == ["cut.png", "empty.png", "junk.jpg"]
    line = summary.describe()
    assert line.startswith("wrote 3 predictions") and "skipped 3 unreadable" in line
    err = capsys.readouterr().err
    assert all(name in err for name in ("cut.png", "empty.png", "junk.jpg"))
    (folder / "more").mkdir()
    (folder / "more" / "x.png").write_bytes(b"")
    for p in good:
        p.write_bytes(b"")
    with pytest.raises(UserError, match="none of the 7 posters could be read"):
        predictor.predict_to(folder, tmp_path / "q.csv", workers=0, progress_bar=False)
    assert _leftovers(tmp_path) == [] and not (tmp_path / "q.csv").exists()


def test_every_source_kind(predictor, tmp_path):
    posters = tmp_path / "posters"
    a, b = _posters(posters, 2)
    c = make_poster(posters / "sub" / "c.png", (10, 10, 10))
    (posters / "notes.txt").write_text("not a poster: ignored in a folder")
    data = tmp_path / "set"
    one = make_poster(data / "images" / "tt0000001.png", (200, 0, 0))
    two = make_poster(data / "images" / "tt0000002.png", (0, 200, 0))
    labels = data / "labels.csv"
    labels.write_text("imdbId,Genre\ntt0000001,Action\n2,Drama\ntt0000003,Comedy\n,Drama\n")
    listing = tmp_path / "lists" / "posters.txt"
    listing.parent.mkdir()
    listing.write_text(f"# posters to score\n\n../posters/p00.png\n  {b}  \nmissing.png\n")
    cases = {
        "folder": (posters, [a, b, c], 0),
        "glob": (str(posters / "**" / "*.png"), [a, b, c], 0),
        "labels": (labels, [one, two], 1),  # tt0000003 has no image: "file not found"
        "list": (listing, [listing.parent / "../posters/p00.png", b], 1),
        "file": (c, [c], 0),
    }
    for kind, (source, expected, missing) in cases.items():
        assert poster_source(source).kind == kind
        out = tmp_path / f"{kind}.jsonl"
        summary = predictor.predict_to(source, out, workers=0, progress_bar=False)
        assert list(_read_rows(out)) == [str(p) for p in expected], kind
        assert summary.skipped_by_reason.get("file not found", 0) == missing, kind
    walked = list(poster_source(posters))
    assert walked == sorted(p for p in posters.rglob("*") if p.suffix == ".png")
    both = predictor.predict_to([posters, a], tmp_path / "both.csv", progress_bar=False)
    assert both.written == 3 and both.duplicates == 1  # a poster named twice is predicted once
    with pytest.raises(UserError, match="no id column"):
        (tmp_path / "bad.csv").write_text("title,genre\nx,Drama\n")
        poster_source(tmp_path / "bad.csv")


def test_decoding_is_lazy_and_in_flight_batches_stay_bounded(tmp_path):
    paths = _posters(tmp_path, 11)
    paths.insert(4, tmp_path / "missing.png")
    pulled = 0

    def lazily():
        nonlocal pulled
        for path in paths:
            pulled += 1
            yield path

    class CountingExecutor:
        submitted = 0

        def submit(self, fn, *args):
            self.submitted += 1
            future: Future = Future()
            future.set_result(fn(*args))
            return future

    executor, in_flight, batch_size = CountingExecutor(), 2, 3
    spec = InputSpec(20, 30, "squash", UNIT_RANGE)
    batches = decoded_batches(lazily(), spec, batch_size, executor, in_flight)
    positions, errors, taken = [], [], 0
    for batch in batches:
        taken += 1
        assert executor.submitted - taken <= in_flight  # waiting beside the batch taken
        assert pulled <= (taken + in_flight) * batch_size  # the source is read lazily
        assert batch.pixels.shape == (len(batch.paths), 30, 20, 3)
        positions += batch.positions
        errors += [(i, path) for i, path, _ in batch.errors]
    assert taken == 4 and executor.submitted == 4
    assert sorted(positions + [i for i, _ in errors]) == list(range(12))
    assert errors == [(4, tmp_path / "missing.png")]
    assert in_flight_batches(0) == 2 and in_flight_batches(3) == 6


def test_path_set_remembers_paths_across_merges(monkeypatch):
    monkeypatch.setattr(PathSet, "_MERGE", 4)
    seen = PathSet()
    assert all(seen.add(f"p{i}") for i in range(10))
    assert len(seen) == 10 and not seen.add("p3") and not seen.add("p9")
    assert "p0" in seen and "p10" not in seen


def test_an_unfinished_run_is_refused_without_resume_and_resumed_with_it(
    bundle, predictor, tmp_path, capsys
):
    folder = tmp_path / "posters"
    _posters(folder, 4)
    out = tmp_path / "preds.csv"
    started_on = journal_start(predictor, open_sources([str(folder)]))  # as the CLI starts it
    with PredictionJournal(out, GENRES, predictor.name, started_on=started_on) as journal:
        first = predictor.predict(folder, progress_bar=False)
        journal.append([first[0]])
    argv = ["predict", str(folder), "--model", str(bundle), "--runtime", "torch"]
    argv += ["--out", str(out)]
    capsys.readouterr()
    assert main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert str(journal_path(out)) in line and "--resume" in line and "unfinished" in line
    assert main([*argv, "--resume", "--json"]) == 0
    captured = capsys.readouterr()
    assert "wrote 4 predictions" in captured.err and "(3 new, 1 already there)" in captured.err
    assert [item["path"] for item in json.loads(captured.out)] == first.paths
    assert list(_read_rows(out)) == first.paths
    assert _leftovers(tmp_path) == []
    with pytest.raises(UserError, match="not 'other'"):
        with PredictionJournal(out, GENRES, "seed") as journal:
            pass
        PredictionJournal(out, GENRES, "other", resume=True)


_KILLED_RUN = """
import sys, time
from postergenre.inference import Predictor

bundle, folder, out = sys.argv[1:4]
predictor = Predictor.from_pretrained(bundle, runtime="torch")
run, calls = predictor._run, []

def run_then_hang(pixels, texts=None):
    calls.append(len(pixels))
    if len(calls) > 3:
        time.sleep(600)  # the test kills this process here: 3 batches are in the journal
    return run(pixels, texts)

predictor._run = run_then_hang
predictor.predict_to(folder, out, batch_size=4, workers=1, progress_bar=False)
"""


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _wait_for(condition, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def test_resume_after_sigkill_gives_the_rows_of_an_uninterrupted_run(bundle, tmp_path, capsys):
    folder = tmp_path / "posters"
    _posters(folder, 30)
    (folder / "zz-bad.png").write_text("not a poster")  # last: batches 1-3 hold 12 posters
    out = tmp_path / "killed.csv"
    partial = journal_path(out)
    killed = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(bundle), str(folder), str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(
            lambda: (
                killed.poll() is not None
                or (partial.is_file() and len(partial.read_bytes().splitlines()) >= 13)
            ),
            "three batches in the journal",
        )
        assert killed.poll() is None, killed.stderr.read() if killed.stderr else ""
        workers = _children(killed.pid)
        assert workers or not Path(f"/proc/{killed.pid}/task").is_dir()  # workers=1: a child
        killed.send_signal(signal.SIGKILL)
    finally:
        if killed.poll() is None:
            killed.kill()
        killed.wait()
        if killed.stderr:
            killed.stderr.close()
    assert not out.exists()
    with partial.open("ab") as handle:  # as if the kill had torn the line being written
        handle.write(b'{"path": "' + str(folder).encode() + b"/p2")
    argv = ["predict", str(folder), "--model", str(bundle), "--runtime", "torch"]
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    assert "(18 new, 12 already there)" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "whole.csv")]) == 0
    resumed, whole = _read_rows(out), _read_rows(tmp_path / "whole.csv")
    assert sorted(resumed) == sorted(whole) and len(whole) == 30
    differences = np.abs(np.array([resumed[k] for k in whole]) - np.array(list(whole.values())))
    assert differences.max() <= 1e-6 + 1e-12  # rows are rounded to 6 decimals
    assert _leftovers(tmp_path) == []
    # the decoding processes left with their parent instead of waiting for work forever
    _wait_for(lambda: not any(_alive(pid) for pid in workers), "the orphaned workers to exit")


def test_a_run_stopped_before_its_first_row_leaves_nothing_to_resume(
    predictor, tmp_path, monkeypatch
):
    _posters(tmp_path / "posters", 2)

    def broken(pixels, texts=None):
        raise UserError("the model broke")

    monkeypatch.setattr(predictor, "_run", broken)
    with pytest.raises(UserError, match="the model broke"):
        predictor.predict_to(tmp_path / "posters", tmp_path / "p.csv", progress_bar=False)
    assert _leftovers(tmp_path) == []
    with pytest.raises(UserError, match="batch size"):
        predictor.predict_to(tmp_path / "posters", tmp_path / "p.csv", batch_size=0)
    assert _leftovers(tmp_path) == []


def test_the_decode_cache_is_used_only_when_asked(predictor, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("POSTERGENRE_CACHE", str(cache))
    folder = tmp_path / "posters"
    _posters(folder, 5)
    (folder / "bad.png").write_bytes(b"")
    predictor.predict_to(folder, tmp_path / "plain.csv", workers=0, progress_bar=False)
    assert not list(cache.glob("posters-*"))
    for _ in range(2):  # filling the cache, then reading from it
        summary = predictor.predict_to(
            folder, tmp_path / "cached.csv", cache=True, batch_size=2, progress_bar=False
        )
        assert summary.written == 5 and dict(summary.skipped_by_reason) == {"empty file": 1}
    assert list(cache.glob("posters-*"))
    plain, cached = _read_rows(tmp_path / "plain.csv"), _read_rows(tmp_path / "cached.csv")
    assert list(plain) == list(cached)
    np.testing.assert_allclose(list(plain.values()), list(cached.values()), atol=1e-6, rtol=0)


# -- a journal resumes only the run it was started on -----------------------------------------


def _stopped_run(predictor, folder: Path, out: Path, monkeypatch) -> Path:
    """Run `predict_to(folder, out)` until its second batch, as a killed run stops: the journal
    holds the first batch's 2 rows."""
    run, calls = predictor._run, []

    def run_then_stop(pixels, texts=None):
        calls.append(len(pixels))
        if len(calls) > 1:
            raise KeyboardInterrupt
        return run(pixels, texts)

    with monkeypatch.context() as patch:
        patch.setattr(predictor, "_run", run_then_stop)
        with pytest.raises(KeyboardInterrupt):
            predictor.predict_to(folder, out, batch_size=2, workers=0, progress_bar=False)
    assert len(journal_path(out).read_text().splitlines()) == 3  # the header and 2 rows
    return journal_path(out)


def _one_error_line(capsys) -> str:
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("postergenre predict: error: ")
    return line


@pytest.mark.parametrize("other", ["other posters", "another folder too", "another model"])
def test_resuming_another_run_is_refused_in_one_line(
    bundle, predictor, tmp_path, monkeypatch, capsys, other
):
    first, second = tmp_path / "first", tmp_path / "second"
    _posters(first, 5)
    _posters(second, 5)
    out = tmp_path / "preds.csv"
    partial = _stopped_run(predictor, first, out, monkeypatch)
    before = partial.read_bytes()
    model, sources = bundle, [str(first)]
    if other == "other posters":
        sources = [str(second)]
    elif other == "another folder too":
        sources = [str(first), str(second)]
    else:  # the same card (name, genres) with other weights
        model = tmp_path / "model"
        shutil.copytree(bundle, model)
        weights = model / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-4:] = np.float32(0.5).tobytes()
        weights.write_bytes(bytes(data))
    argv = ["predict", *sources, "--model", str(model), "--runtime", "torch"]
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--resume"]) == 2
    line = _one_error_line(capsys)
    assert str(partial) in line and "delete it" in line
    assert ("another model" if other == "another model" else "other posters") in line
    assert partial.read_bytes() == before and not out.exists()  # nothing mixed, nothing lost
    with pytest.raises(UserError, match="started on"):
        Predictor.from_pretrained(model, runtime="torch").predict_to(sources, out, resume=True)
    assert main([*argv, "--out", str(tmp_path / "fresh.csv")]) == 0  # a fresh run is fine


ROW_DAMAGE = {
    "probability above 1": lambda r: r["genres"][0].update(probability=7.5),
    "negative probability": lambda r: r["genres"][1].update(probability=-0.25),
    "probability not a number": lambda r: r["genres"][0].update(probability="high"),
    "a genre missing": lambda r: r["genres"].pop(),
    "a genre not the model's": lambda r: r["genres"][0].update(genre="Horror"),
    "predicted genre not the model's": lambda r: r.update(predicted=["Horror"]),
    "no path": lambda r: r.pop("path"),
}


@pytest.mark.parametrize("damage", [*ROW_DAMAGE, "NaN", "not JSON"])
def test_a_damaged_row_of_the_journal_is_refused_in_one_line(
    bundle, predictor, tmp_path, monkeypatch, capsys, damage
):
    folder = tmp_path / "posters"
    _posters(folder, 5)
    out = tmp_path / "preds.jsonl"
    partial = _stopped_run(predictor, folder, out, monkeypatch)
    header, first, second = partial.read_bytes().splitlines(keepends=True)
    if damage == "NaN":
        first = first.replace(b'"probability": ', b'"probability": NaN, "x": ', 1)
    elif damage == "not JSON":
        first = first[:20] + b"\n"
    else:
        row = json.loads(first)
        ROW_DAMAGE[damage](row)
        first = json.dumps(row).encode() + b"\n"
    partial.write_bytes(header + first + second)
    argv = ["predict", str(folder), "--model", str(bundle), "--runtime", "torch"]
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--resume"]) == 2
    line = _one_error_line(capsys)
    assert f"{partial}: line 2" in line and "delete it" in line
    assert not out.exists() and partial.read_bytes() == header + first + second


def test_a_torn_last_row_is_dropped_with_a_warning(
    bundle, predictor, tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "posters"
    _posters(folder, 5)
    out = tmp_path / "preds.csv"
    partial = _stopped_run(predictor, folder, out, monkeypatch)
    with partial.open("ab") as handle:
        handle.write(b'{"path": "' + str(folder).encode() + b'/p2.png", "genres": [{"gen')
    argv = ["predict", str(folder), "--model", str(bundle), "--runtime", "torch"]
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "(3 new, 2 already there)" in err
    [warning] = [line for line in err.splitlines() if line.startswith("warning:")]
    assert str(partial) in warning and "cut short" in warning
    assert len(_read_rows(out)) == 5
