"""Predictions streamed into a file (`Predictor.predict_to`): any number of posters, flat
memory, resumable.

Each batch's predictions go to the journal `out.partial` (`PredictionJournal`) as the engine
scores them; when every poster is done, `out` appears in one rename and the journal goes.
Memory: at most `in_flight_batches(workers) + 1` batches of decoded posters exist at once
(2 workers, 32 posters of 224x336: 36 MB), plus 8 bytes per poster path (`PathSet`: 80 MB for
10 million) to predict a poster named twice once and to skip those already in the journal.
The engine is the local one (`postergenre.engines.local`) or Ray (`postergenre.engines.ray`):
rows, journal and skipped posters are the same.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from postergenre.console import echo, progress, report_skipped, warn
from postergenre.data.sources import PosterSources, open_sources
from postergenre.engines.decoding import DecodedBatch, Model
from postergenre.engines.local import check_batch_size, decoding_workers
from postergenre.engines.ray_cluster import check_engine
from postergenre.errors import PosterDecodeError, UserError
from postergenre.inference.journal import PathSet, PredictionJournal, journal_path
from postergenre.inference.predictions import Predictions, check_output
from postergenre.models.card import ModelCard
from postergenre.models.threshold_policy import DEFAULT_POLICY

# An engine's scoring: posters (read lazily) -> each batch with its readable posters' values.
Scoring = Callable[[Iterator[Path]], Iterator[tuple[DecodedBatch, np.ndarray]]]


# -- what a long run did ----------------------------------------------------------------------

# A run's summary lists this many unreadable files (all are counted, by reason).
SKIPPED_LISTED = 1000


def skip_reason(path: str, message: str) -> str:
    """The kind of a decoding error, for counting: "not an image", "empty file", ..."""
    text = message.removeprefix(f"{path}: ").split(" (", 1)[0].split(";", 1)[0]
    return "too many pixels" if "over the limit" in text else text


@dataclass
class StreamSummary:
    """What `Predictor.predict_to` did: rows written, resumed, skipped (by reason)."""

    out: Path
    written: int = 0  # rows this run predicted
    resumed: int = 0  # rows an unfinished earlier run had written
    duplicates: int = 0  # posters named more than once (predicted once)
    skipped: dict[str, str] = field(default_factory=dict)  # path: reason, the first listed
    skipped_by_reason: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        """Rows in the output."""
        return self.written + self.resumed

    @property
    def skipped_count(self) -> int:
        return sum(self.skipped_by_reason.values())

    def skip(self, path: str, message: str) -> None:
        """Count (and, for the first `SKIPPED_LISTED`, list) an unreadable poster."""
        self.skipped_by_reason[skip_reason(path, message)] += 1
        if len(self.skipped) < SKIPPED_LISTED:
            self.skipped[path] = message

    def describe(self) -> str:
        """One line: `wrote N predictions to FILE (...); skipped M unreadable: ...`."""
        line = f"wrote {self.rows:,} predictions to {self.out}"
        if self.resumed:
            line += f" ({self.written:,} new, {self.resumed:,} already there)"
        if self.skipped_count:
            reasons = ", ".join(f"{n:,} {r}" for r, n in self.skipped_by_reason.most_common())
            line += f"; skipped {self.skipped_count:,} unreadable: {reasons}"
        if self.duplicates:
            line += f"; {self.duplicates:,} named more than once, predicted once"
        return line


def stream_predictions(
    predictor: Any,  # a `Predictor` (the caller: not imported here)
    posters: str | Path | Sequence[str | Path] | PosterSources,
    out: str | Path,
    *,
    resume: bool,
    workers: int | None,
    batch_size: int,
    cache: bool,
    top: int | None,
    progress_bar: bool,
    engine: str,
    address: str | None,
) -> StreamSummary:
    """`Predictor.predict_to`: every poster of `posters` predicted into the file `out` (see
    there); bad arguments are refused before any poster is read."""
    started = time.monotonic()
    out = Path(out)
    check_output(out)
    check_batch_size(batch_size)
    check_engine(engine, address)
    if engine == "ray" and cache:
        raise UserError("the decode cache is local to this machine: use the local engine")
    sources = open_sources(posters)
    total = sources.count()  # one pass: an empty folder fails here, before any work
    predictor.ready()  # a bad bundle too, before the journal and the progress line
    score: Scoring
    if engine == "ray":
        score = partial(
            _scored_on_ray, predictor, batch_size=batch_size, workers=workers, address=address
        )
    else:
        decoders = decoding_workers(workers, total)
        score = partial(
            predictor.local_engine.scored, cache=cache, batch_size=batch_size, workers=decoders
        )
    summary = StreamSummary(out)
    afresh = resume and not journal_path(out).exists()
    started_on = journal_start(predictor, sources)
    with PredictionJournal(
        out, predictor.genres, predictor.name, resume, started_on=started_on
    ) as journal:
        summary.resumed = journal.resumed
        _journal_rows(journal, summary, _Unseen(sources, journal, summary), score,
                      predictor.card, total, progress_bar)  # fmt: skip
        summary.written = journal.appended
        if not journal.rows:
            journal.discard()
            if sources.single and summary.skipped:  # one poster named alone: its reason
                raise PosterDecodeError(next(iter(summary.skipped.values())))
            _report_skipped(summary)
            raise UserError(f"none of the {total} posters could be read")
        _report_skipped(summary)
        journal.finish(top)
    # said once the run has succeeded: a run that fails says only why
    if afresh:
        echo(f"nothing to resume ({journal_path(out)} did not exist): started afresh")
    if journal.torn_line_dropped:
        warn(f"{journal.path}: dropped its last line, cut short when its run stopped")
    summary.seconds = time.monotonic() - started
    return summary


def journal_start(predictor: Any, sources: PosterSources) -> dict[str, Any]:
    """What a run's journal records it was started on, so that only the same run resumes it:
    the model's bundle digest, every source (its kind and absolute path) as given, and a
    threshold policy other than the default (the rows hold predicted genres)."""
    start = {
        "model_digest": predictor.digest,
        "sources": [[source.kind, os.path.abspath(source.path)] for source in sources.sources],
    }
    policy = getattr(predictor, "threshold_policy", DEFAULT_POLICY)
    if policy != DEFAULT_POLICY:
        start["threshold_policy"] = policy
    return start


class _Unseen:
    """The posters of `sources` to predict: not in the journal yet, each once (a poster named
    twice counts in `summary.duplicates`). `passed` counts those passed over since the
    progress bar last heard of them."""

    def __init__(self, sources: PosterSources, journal: PredictionJournal, summary: StreamSummary):
        self.sources, self.journal, self.summary = sources, journal, summary
        self.seen = PathSet()
        self.passed = 0

    def __iter__(self) -> Iterator[Path]:
        for path in self.sources:
            key = str(path)
            if key in self.journal.done:
                self.passed += 1
            elif not self.seen.add(key):
                self.summary.duplicates += 1
                self.passed += 1
            else:
                yield path

    def take_passed(self) -> int:
        """Posters passed over since the last call."""
        passed, self.passed = self.passed, 0
        return passed


def _journal_rows(
    journal: PredictionJournal,
    summary: StreamSummary,
    unseen: _Unseen,
    score: Scoring,
    card: ModelCard,
    total: int,
    progress_bar: bool,
) -> None:
    """Score the unseen posters into the journal, batch by batch, counting the unreadable ones;
    a journal stopped before its first row goes (nothing in it to resume)."""
    scored = score(iter(unseen))
    try:
        with progress(total, "predicting", enabled=progress_bar) as bar, closing(scored):
            for batch, probs in scored:
                journal.append(Predictions(card, [str(p) for p in batch.paths], probs))
                for _, path, reason in batch.errors:
                    summary.skip(str(path), reason)
                bar.update(batch.size + unseen.take_passed())
            bar.update(unseen.take_passed())
    except BaseException:
        if not journal.rows:
            journal.discard()
        raise


def _report_skipped(summary: StreamSummary) -> None:
    """The unreadable posters on stderr; the summary line counts them all, so no tally here."""
    report_skipped(summary.skipped, count=summary.skipped_count, tally=False)


def _scored_on_ray(
    predictor: Any,
    posters: Iterator[Path],
    *,
    batch_size: int,
    workers: int | None,
    address: str | None,
) -> Iterator[tuple[DecodedBatch, np.ndarray]]:
    """The Ray engine's scoring with the predictor's exported graph (exported once into the
    cache if need be), shipped to every actor."""
    runner = predictor.onnx_runner
    if runner is None or runner.path is None:
        raise UserError(
            "the Ray engine runs the model's ONNX graph: choose the onnx runtime (or auto, with "
            "onnxruntime installed)"
        )
    from postergenre.engines.ray import ray_scored_batches

    graph = runner.path.read_bytes()
    load = partial(_graph_model, type(predictor), predictor.card, predictor.name, graph)
    yield from ray_scored_batches(
        posters,
        load,
        predictor.input_spec,
        len(predictor.genres),
        ocr=predictor.card.text.ocr if predictor.card.text is not None else None,
        batch_size=batch_size,
        workers=workers,
        address=address,
    )


def _graph_model(
    predictor_class: type, card: ModelCard, name: str, graph: bytes, threads: int
) -> Model:
    """On a Ray worker: the driver's `Predictor` class over `graph` in ONNX Runtime, on
    `threads` threads (its preprocessing and finite-probability check, as on the driver)."""
    from postergenre.inference.onnx_runtime import OnnxRunner

    # The folder is never read: the session is given, made from the driver's graph.
    predictor = predictor_class(card=card, folder=Path(), name=name, runtime="onnx")
    predictor.onnx_runner = OnnxRunner(graph, threads)
    return lambda pixels, texts: predictor.predict_pixels(pixels, len(pixels), texts)
