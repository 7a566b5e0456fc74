"""The journal of a long run (`Predictor.predict_to`): predictions appended beside the output
as they are made, so a killed run continues where it stopped (`--resume`).

A journal resumes only the run it was started on: its header records the model (name, genres
and the bundle's digest) and the sources (`started_on`), and every row is checked (a path,
each of the model's genres once with a finite probability in [0, 1], predicted genres of the
model) before it is trusted. Anything else is refused in one line, except the last line of a
killed run, cut short as it was written: that one is dropped, with a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from postergenre.errors import UserError
from postergenre.inference.predictions import Prediction, check_output, json_text, write_stream


class PathSet:
    """A set of paths at 8 bytes each (64-bit BLAKE2b digests, kept sorted in NumPy arrays):
    10 million paths take 80 MB. Two paths share a digest with odds of about n²/2^65 (3 in a
    million for 10 million paths)."""

    _MERGE = 65_536

    def __init__(self) -> None:
        self._sorted = np.zeros(0, dtype=np.int64)
        self._recent: set[int] = set()

    @staticmethod
    def _digest(path: str) -> int:
        data = path.encode("utf-8", "surrogateescape")
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self._has(self._digest(path))

    def _has(self, digest: int) -> bool:
        if digest in self._recent:
            return True
        i = int(np.searchsorted(self._sorted, np.int64(digest)))
        return i < len(self._sorted) and int(self._sorted[i]) == digest

    def add(self, path: str) -> bool:
        """Add `path`; False when it was already there."""
        digest = self._digest(path)
        if self._has(digest):
            return False
        self._recent.add(digest)
        if len(self._recent) >= self._MERGE:
            recent = np.sort(np.fromiter(self._recent, dtype=np.int64, count=len(self._recent)))
            # two sorted runs: the stable sort (timsort) merges them in linear time
            self._sorted = np.sort(np.concatenate([self._sorted, recent]), kind="stable")
            self._recent.clear()
        return True


class UnfinishedPredictions(UserError):
    """The predictions of an unfinished run lie beside the output, and resuming was not asked."""

    hint = "pass --resume to go on with it, or delete it"


class NotThisRun(UserError):
    """A journal that cannot be resumed by this run: another run's, or damaged."""

    hint = "delete it to start afresh"


JOURNAL_SUFFIX = ".partial"
_JOURNAL = "postergenre predictions journal"
_VERSION = 2


def journal_path(out: Path) -> Path:
    """Where a run writing `out` keeps its predictions until it is done: `out` + `.partial`."""
    return out.with_name(out.name + JOURNAL_SUFFIX)


class PredictionJournal:
    """Predictions on their way to `out`, appended to `journal_path(out)` (JSON Lines: a header
    naming the model, its genres and what the run was `started_on`, then one
    `Prediction.to_json()` a line) and flushed after every `append`, so a killed run loses at
    most what it was writing.

    `resume` continues an existing journal of the same model, genres and `started_on` (its
    paths are in `done`, every row checked, a torn last line cut off); without it an existing
    journal is refused (`UnfinishedPredictions`). `finish` writes `out` from the journal
    (streaming, atomically) and deletes the journal. One process at a time: the journal is
    locked while open.
    """

    def __init__(
        self,
        out: Path,
        genres: Sequence[str],
        model: str,
        resume: bool = False,
        *,
        started_on: Mapping[str, Any] | None = None,
    ):
        check_output(out)
        self.out = Path(out)
        self.path = journal_path(self.out)
        self.genres = list(genres)
        self.model = model
        # JSON's view of it (tuples are lists), as the header read back gives it
        self.started_on = json.loads(json.dumps(dict(started_on or {})))
        self.done = PathSet()  # paths already in the journal when it was opened
        self.resumed = 0  # rows already in the journal when it was opened
        self.appended = 0
        self.torn_line_dropped = False  # the last line, cut short by a kill (said by the caller)
        if self.path.exists() and not resume:
            raise UnfinishedPredictions(
                f"{self.path} holds the predictions of an unfinished run into {self.out.name}"
            )
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._handle: IO[bytes] | None = open(self.path, "a+b")  # noqa: SIM115 (closed in close)
        except OSError as exc:
            raise UserError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            raise UserError(f"another run is writing {self.path}") from None
        try:
            self._read_back()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> PredictionJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def rows(self) -> int:
        """Rows in the journal: resumed and appended."""
        return self.resumed + self.appended

    def _header(self) -> dict[str, Any]:
        return {
            "journal": _JOURNAL,
            "version": _VERSION,
            "model": self.model,
            "genres": self.genres,
            "started_on": self.started_on,
        }

    def _read_back(self) -> None:
        """Check the header and every row, note every path, and cut off a torn tail (a line a
        kill left half-written); an empty journal gets its header."""
        handle = self._handle
        assert handle is not None
        handle.seek(0)
        header, end = _json_line(handle.readline())
        if header is None:  # new, or killed before its header was written
            handle.truncate(0)
            handle.write((json_text(self._header()) + "\n").encode())
            handle.flush()
            return
        self._check_header(header)
        offset, number = end, 1
        for line in iter(handle.readline, b""):
            number += 1
            if not line.endswith(b"\n"):  # only the last line can lack its newline
                self.torn_line_dropped = True
                handle.truncate(offset)
                break
            path = _row_path(line, self.genres)
            if isinstance(path, Exception):
                raise NotThisRun(f"{self.path}: line {number} is not a sound prediction ({path})")
            self.done.add(path)
            self.resumed += 1
            offset += len(line)
        handle.seek(0, os.SEEK_END)

    def _check_header(self, header: dict[str, Any]) -> None:
        """Refuse the journal of another version, model or set of posters."""
        if header.get("journal") != _JOURNAL:
            raise NotThisRun(f"{self.path} is not a predictions journal")
        if header.get("version") != _VERSION:
            raise NotThisRun(f"{self.path} was written by another version of PosterGenre")
        if header.get("genres") != self.genres or header.get("model") != self.model:
            raise UserError(
                f"{self.path} holds predictions of model {header.get('model')!r}, not "
                f"{self.model!r}: predict with that model, or delete it"
            )
        recorded = header.get("started_on")
        if recorded != self.started_on:
            recorded = recorded if isinstance(recorded, dict) else {}
            keys = {**recorded, **self.started_on}
            differs = [key for key in keys if recorded.get(key) != self.started_on.get(key)]
            what = (
                "another model"
                if "model_digest" in differs
                else "another threshold policy"
                if "threshold_policy" in differs
                else "other posters"
            )
            raise NotThisRun(f"{self.path} was started on {what}: resuming would mix their rows")

    def append(self, predictions: Iterable[Prediction]) -> None:
        """Add predictions, and flush them to the operating system (a kill keeps them)."""
        assert self._handle is not None, "the journal is closed"
        lines = [json_text(p.to_json()) + "\n" for p in predictions]
        self._handle.write("".join(lines).encode())
        self._handle.flush()
        self.appended += len(lines)

    def predictions(self) -> Iterator[Prediction]:
        """Every prediction in the journal, read back one line at a time."""
        with self.path.open("rb") as handle:
            handle.readline()  # the header
            for line in handle:
                yield Prediction.from_json(json.loads(line))

    def finish(self, top: int | None = None) -> Path:
        """Write `out` from the journal (see `write_stream`), then delete the journal."""
        assert self._handle is not None, "the journal is closed"
        self._handle.flush()
        os.fsync(self._handle.fileno())
        write_stream(self.out, self.genres, self.predictions(), top)
        self.discard()
        return self.out

    def discard(self) -> None:
        """Delete the journal (nothing in it is worth resuming)."""
        self.path.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        """Close the journal, leaving it for a later run to resume."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None


def _json_line(line: bytes) -> tuple[dict[str, Any] | None, int]:
    """A whole JSON-object line (ending in a newline) and its length, else (None, 0)."""
    if not line.endswith(b"\n"):
        return None, 0
    try:
        item = json.loads(line)
    except ValueError:
        return None, 0
    return (item, len(line)) if isinstance(item, dict) else (None, 0)


def _row_path(line: bytes, genres: Sequence[str]) -> str | ValueError:
    """The path of a sound journal row (as `Prediction.to_json()` writes one for `genres`), else
    what is wrong with it."""
    try:
        row = json.loads(line, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        return ValueError(f"not JSON: {exc}")
    if not isinstance(row, dict) or set(row) != {"path", "genres", "predicted"}:
        return ValueError("not an object of path, genres and predicted")
    ranked, predicted = row["genres"], row["predicted"]
    if not isinstance(row["path"], str) or not isinstance(ranked, list):
        return ValueError("a path or genres of the wrong type")
    if not all(isinstance(g, dict) and set(g) == {"genre", "probability"} for g in ranked):
        return ValueError("genres not a list of genre and probability")
    if sorted(str(g["genre"]) for g in ranked) != sorted(genres):
        return ValueError("not each of the model's genres once")
    for g in ranked:
        p = g["probability"]
        if type(p) not in (int, float) or not (math.isfinite(p) and 0 <= p <= 1):
            return ValueError(f"probability {p!r:.20} of {g['genre']} is not in [0, 1]")
    if not isinstance(predicted, list) or not all(p in genres for p in predicted):
        return ValueError("predicted genres that are not the model's")
    return row["path"]


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a probability")
