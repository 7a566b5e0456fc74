"""`Predictor`: the one entrance for "what genres is this poster?".

    predictor = Predictor.from_pretrained("imdb-20")     # or a bundle / run folder
    predictions = predictor.predict("posters/")          # files, folders, globs
    predictions.write("preds.csv")                       # or .json / .jsonl / .parquet
    predictor.predict_to("posters/", "preds.csv")        # any number of posters, streamed
    predictor.evaluate(collection, split="test")         # metrics on labelled posters
    predictor.explain("poster.jpg", genre="Horror")      # Grad-CAM heatmap

Every command (`predict`, `evaluate`, `explain`, `export`, `serve`) and the benchmarks go
through this class. With the ONNX runtime (the default where onnxruntime is installed), a
prediction imports neither torch nor scikit-learn nor matplotlib: the model card is JSON, the
poster is prepared with NumPy and the exported graph (made once, cached) runs in ONNX Runtime.

Collections go through one pipeline (`predict`, `predict_to`, `evaluate`): paths are read
lazily, decoded and resized in batches by worker processes (`decoded_batches`; at most
`in_flight_batches` batches ahead of the model) or through the decode cache (`cached_batches`),
and the model runs each batch here.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import closing
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from postergenre._cpu import default_workers
from postergenre.console import echo, progress, report_skipped, warn
from postergenre.data.decode import decode_poster
from postergenre.data.records import PosterCollection, PosterRecord
from postergenre.data.sources import PosterFiles, PosterSources, find_posters, open_sources
from postergenre.data.text import PosterText, ocr_version, read_poster_texts
from postergenre.errors import PosterDecodeError, UserError
from postergenre.inference.batches import (
    DecodedBatch,
    cached_batches,
    decoded_batches,
    decoder_started,
    in_flight_batches,
)
from postergenre.inference.predictions import (
    PathSet,
    Prediction,
    PredictionJournal,
    Predictions,
    StreamSummary,
    check_output,
    journal_path,
)
from postergenre.models.card import ModelCard, to_probabilities
from postergenre.models.catalog import DEFAULT_MODEL, resolve_model

if TYPE_CHECKING:
    from postergenre.data.cache import PosterCache
    from postergenre.explain.gradcam import Explanation
    from postergenre.models.bundle import ModelBundle

RUNTIMES = ("auto", "onnx", "openvino", "torch")
PREDICT_BATCH = 32
# Fewer posters than this decode in one thread beside the model when no worker count is
# named: starting decoding processes would cost more than they save.
PROCESS_MIN_POSTERS = 64


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise UserError(f"batch size must be 1 or more, not {batch_size}")


def _report_skipped(summary: StreamSummary, limit: int = 20) -> None:
    """The first `limit` unreadable posters on stderr, then how many more."""
    for message in list(summary.skipped.values())[:limit]:
        warn(f"skipped {message}")
    if summary.skipped_count > limit:
        warn(f"... and {summary.skipped_count - limit:,} more unreadable posters")


def _finite_or_none(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def onnx_available() -> bool:
    """Whether ONNX Runtime is installed (checked without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


class Predictor:
    """Predict genres with a model bundle: `Predictor.from_pretrained("imdb-20").predict(paths)`.

    `runtime` is "onnx" (ONNX Runtime over the exported graph, exported once and cached),
    "openvino" (OpenVINO over the same graph; the `openvino` extra), "torch" (PyTorch) or
    "auto" (ONNX Runtime where it is installed).
    """

    def __init__(
        self,
        bundle: ModelBundle | None = None,
        *,
        card: ModelCard | None = None,
        folder: str | Path | None = None,
        name: str = "",
        runtime: str = "torch",
        cache_dir: Path | None = None,
    ):
        if runtime not in RUNTIMES:
            raise UserError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if bundle is None and (card is None or folder is None):
            raise ValueError("give a loaded bundle, or a card and its folder")
        self._bundle = bundle
        self.card: ModelCard = bundle.card if bundle is not None else card  # type: ignore[assignment]
        self.folder = Path(folder) if folder is not None else None
        self.name = name or self.card.name or (self.folder.name if self.folder else "")
        self.cache_dir = cache_dir
        self.genres = list(self.card.genres)
        self.task = self.card.task
        self.input_spec = self.card.input
        self.thresholds = np.array(self.card.thresholds or [0.5] * len(self.genres))
        self._runner: Any = None
        self._auto = runtime == "auto"
        self.runtime = ("onnx" if onnx_available() else "torch") if self._auto else runtime
        if self.runtime == "openvino":
            from postergenre.inference.openvino_runtime import require_openvino

            require_openvino()  # refuses now, with how to install it, if it is missing
        if self.card.reads_text:
            ocr_version()  # refuses now, with how to install OCR, if it is missing

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        runtime: str = "auto",
        cache_dir: Path | None = None,
    ) -> Predictor:
        """Load a bundled model by name (default `imdb-20`) or a bundle/run folder by path.

        Only the card is read here; the PyTorch model loads when something needs it."""
        folder = resolve_model(name_or_path)
        card = ModelCard.read(folder)
        name = card.name or str(name_or_path or DEFAULT_MODEL)
        return cls(card=card, folder=folder, name=name, runtime=runtime, cache_dir=cache_dir)

    # -- the model, loaded on first use ------------------------------------------------------
    @property
    def bundle(self) -> ModelBundle:
        """The PyTorch model and card (loaded once, on first use)."""
        if self._bundle is None:
            from postergenre.models.bundle import load_bundle

            assert self.folder is not None
            self._bundle = load_bundle(self.folder, self.card)
        return self._bundle

    @property
    def model(self) -> Any:
        """The PyTorch module (Grad-CAM and training use it whatever the runtime)."""
        return self.bundle.model

    @property
    def onnx_runner(self) -> Any:
        """The runner of the exported graph (ONNX Runtime for runtime "onnx", OpenVINO for
        "openvino"), made on first use: the first prediction of a bundle exports it once into
        the cache, so bad input fails before any export."""
        if self.runtime not in ("onnx", "openvino"):
            return None
        if self._runner is None:
            try:
                self._runner = self._onnx_runner()
            except UserError as exc:  # e.g. a graph that does not match PyTorch closely enough
                if not self._auto:
                    raise
                warn(f"{exc}; predicting with PyTorch instead")
                self.runtime = "torch"
        return self._runner

    @onnx_runner.setter
    def onnx_runner(self, runner: Any) -> None:
        self._runner = runner

    def _onnx_runner(self) -> Any:
        from postergenre.inference.onnx_runtime import OnnxRunner, graph_cache_path

        in_memory = self._bundle if self.folder is None else None
        path = graph_cache_path(self.card.architecture, self.folder, in_memory, self.cache_dir)
        if not path.is_file():
            from postergenre.export.onnx import export_onnx

            bundle = self.bundle  # a damaged bundle fails here, before anything is announced
            echo(f"exporting model {self.name} to ONNX once (cached in {path.parent})")
            export_onnx(bundle, path)
        if self.runtime == "openvino":
            from postergenre.inference.openvino_runtime import OpenVinoRunner

            return OpenVinoRunner(path)
        return OnnxRunner(path)

    # -- arrays -----------------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """An RGB poster -> uint8 (H, W, 3) at the model's input size."""
        return self.input_spec.resize_image(image)

    def _run(self, pixels: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        """uint8 (B, H, W, 3) at the input size -> probabilities (B, genres); a model that
        reads text gets `texts` (read here by OCR when not given). A model that gives anything
        but finite probabilities is refused, never shown."""
        text_input = []
        if self.card.text is not None:
            texts = read_poster_texts(pixels) if texts is None else texts
            text_input.append(self.card.text.features(texts))
        runner = self.onnx_runner
        if runner is not None:  # the graph already outputs probabilities
            probs = runner(self.input_spec.normalise(pixels), *text_input)
        else:
            import torch

            with torch.no_grad():
                x = self.input_spec.normalisation.tensor(pixels)
                extra = [torch.from_numpy(t) for t in text_input]
                probs = to_probabilities(self.model(x, *extra), self.task).numpy()
        if not np.isfinite(probs).all():
            raise UserError(f"model {self.name} gave non-finite probabilities; it is damaged")
        return probs

    def predict_pixels(
        self,
        pixels: np.ndarray,
        batch_size: int = PREDICT_BATCH,
        texts: Sequence[str] | None = None,
    ) -> np.ndarray:
        """uint8 (B, H, W, 3) at the input size -> probabilities (B, genres). A model that
        reads text takes `texts` (one per poster), or reads them here with OCR."""
        out = [
            self._run(
                pixels[start : start + batch_size],
                None if texts is None else texts[start : start + batch_size],
            )
            for start in range(0, len(pixels), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.genres)), np.float32)

    def to_prediction(self, path: str, probs: np.ndarray) -> Prediction:
        """One poster's probability row as a ranked `Prediction`."""
        return Predictions(self.card, [path], probs[None, :])[0]

    # -- posters ----------------------------------------------------------------------------
    def predict(
        self,
        posters: str | Path | Image.Image | PosterFiles | Sequence[str | Path | Image.Image],
        *,
        cache: bool = False,
        batch_size: int = PREDICT_BATCH,
        workers: int | None = None,
        progress_bar: bool = True,
    ) -> Predictions:
        """Genres for posters: files, folders, globs, label CSVs, text files of paths (see
        `postergenre.data.sources`), or decoded images; every prediction is kept in memory
        (`predict_to` streams a collection of any size into a file).

        A file named alone that cannot be read raises `PosterDecodeError`; in a collection,
        unreadable files are skipped and listed in `Predictions.skipped` (and on stderr).
        `cache`: keep decoded posters in the cache, so a re-run skips decoding. `workers`:
        decoding processes (see `decoders`).
        """
        if isinstance(posters, Image.Image) or (
            isinstance(posters, Sequence)
            and not isinstance(posters, str)
            and posters
            and all(isinstance(p, Image.Image) for p in posters)
        ):
            images = [posters] if isinstance(posters, Image.Image) else list(posters)
            names = [getattr(im, "filename", "") or f"image {i}" for i, im in enumerate(images)]
            probs = self._run(np.stack([self.preprocess(im.convert("RGB")) for im in images]))
            return Predictions(self.card, names, probs)
        files = posters if isinstance(posters, PosterFiles) else find_posters(posters)  # type: ignore[arg-type]
        if files.single:
            [path] = files.paths
            spec = self.input_spec
            image = decode_poster(path, fit=(spec.width, spec.height))
            probs = self._run(self.preprocess(image)[None])
            return Predictions(self.card, [str(path)], probs)
        ok, probs, errors = self._probabilities(
            files.paths, cache, batch_size, progress_bar, workers
        )
        skipped = {str(files.paths[i]): reason for i, reason in sorted(errors.items())}
        report_skipped(errors)
        if not len(ok):
            raise UserError(f"none of the {len(files.paths)} posters could be read")
        return Predictions(self.card, [str(files.paths[i]) for i in ok], probs, skipped)

    def predict_to(
        self,
        posters: str | Path | Sequence[str | Path] | PosterSources,
        out: str | Path,
        *,
        resume: bool = False,
        workers: int | None = None,
        batch_size: int = PREDICT_BATCH,
        cache: bool = False,
        top: int | None = None,
        progress_bar: bool = True,
        engine: str = "local",
        address: str | None = None,
    ) -> StreamSummary:
        """Predict every poster of `posters` (files, folders, globs, label CSVs, text files of
        paths) into the file `out` (.csv, .json, .jsonl or .parquet, as `Predictions.write`
        writes them), streaming: memory stays flat whatever the collection's size.

        Paths are read lazily, decoded and resized by `workers` processes (see `decoders`)
        while the model runs batches of `batch_size` here, and each batch's predictions go to
        the journal `out.partial` (`PredictionJournal`). When every poster is done, `out`
        appears in one rename and the journal goes. Memory: at most `in_flight_batches(workers)
        + 1` batches of decoded posters exist at once (2 workers, 32 posters of 224x336: 36
        MB), plus 8 bytes per poster path (`PathSet`: 80 MB for 10 million) to predict a poster
        named twice once and to skip those already in the journal.

        `resume` continues the journal of an unfinished run (killed, interrupted), skipping
        the posters already in it; without it, an existing journal is an error. Unreadable
        posters are skipped, counted by reason and listed (on stderr too); a run in which no
        poster can be read is an error. `cache`: keep decoded posters in the cache (off by
        default; see `CACHE_CHUNK`).

        `engine="ray"` scores on Ray instead (`postergenre.inference.ray_engine`): on the
        cluster at `address`, or on a Ray started here; `workers` are then its actors, each
        decoding posters and running the model (default: one per CPU of the cluster). Rows,
        journal and skipped posters are those of the local engine.
        """
        from postergenre.inference.ray_engine import check_engine

        started = time.monotonic()
        out = Path(out)
        check_output(out)
        _check_batch_size(batch_size)
        check_engine(engine, address)
        if engine == "ray" and cache:
            raise UserError("the decode cache is local to this machine: use the local engine")
        sources = open_sources(posters)
        total = sources.count()  # one pass: an empty folder fails here, before any work
        decoders = self.decoders(workers, total) if engine == "local" else 0
        summary = StreamSummary(out)
        if resume and not journal_path(out).exists():
            echo(f"nothing to resume ({journal_path(out)} does not exist): starting afresh")
        with PredictionJournal(out, self.genres, self.name, resume) as journal:
            summary.resumed = journal.resumed
            seen = PathSet()
            passed = 0  # posters passed over (done or named twice) the bar has not counted

            def new_posters() -> Iterator[Path]:
                nonlocal passed
                for path in sources:
                    key = str(path)
                    if key in journal.done:
                        passed += 1
                    elif not seen.add(key):
                        summary.duplicates += 1
                        passed += 1
                    else:
                        yield path

            if engine == "ray":
                from postergenre.inference.ray_engine import ray_scored_batches

                batches = ray_scored_batches(self, new_posters(), batch_size, workers, address)
                scored = batches
            else:
                batches = self._batches(new_posters(), cache, batch_size, decoders)
                scored = self._run_batches(batches)
            try:
                with progress(total, "predicting", enabled=progress_bar) as bar, closing(batches):
                    for batch, probs in scored:
                        paths = [str(p) for p in batch.paths]
                        journal.append(Predictions(self.card, paths, probs))
                        for _, path, reason in batch.errors:
                            summary.skip(str(path), reason)
                        bar.update(batch.size + passed)
                        passed = 0
                    bar.update(passed)
            except BaseException:
                if not journal.rows:  # stopped before its first row: nothing to resume
                    journal.discard()
                raise
            summary.written = journal.appended
            if not journal.rows:
                journal.discard()
                if sources.single and summary.skipped:  # one poster named alone: its reason
                    raise PosterDecodeError(next(iter(summary.skipped.values())))
                _report_skipped(summary)
                raise UserError(f"none of the {total} posters could be read")
            _report_skipped(summary)
            journal.finish(top)
        summary.seconds = time.monotonic() - started
        return summary

    def decoders(self, workers: int | None, posters: int) -> int:
        """Decoding processes for `posters` posters: `workers` when given (0: one thread beside
        the model), else `default_workers()`, or 0 for fewer than `PROCESS_MIN_POSTERS`."""
        if workers is not None:
            if workers < 0:
                raise UserError(f"workers must be 0 or more, not {workers}")
            return workers
        return default_workers() if posters >= PROCESS_MIN_POSTERS else 0

    def _batches(
        self, posters: Iterable[Path], cache: bool, batch_size: int, workers: int
    ) -> Iterator[DecodedBatch]:
        """`posters` decoded and resized to the model's input, in batches, in order: by
        `workers` processes (0: a thread), or through the decode cache."""
        _check_batch_size(batch_size)
        spec = self.input_spec
        if cache:
            from postergenre.data.cache import PosterCache

            def open_cache() -> PosterCache:
                return PosterCache(
                    self.cache_dir, spec.width, spec.height, spec.resize, spec.interpolation
                )

            open_text = None
            if self.card.reads_text:

                def open_text() -> PosterText:
                    return PosterText(self.cache_dir, spec)

            yield from cached_batches(posters, open_cache, batch_size, workers, open_text)
            return
        size = (spec.width, spec.height, spec.resize, spec.interpolation)
        executor: Executor
        if workers == 0:
            executor = ThreadPoolExecutor(1, thread_name_prefix="postergenre-decode")
        else:  # spawn, not fork: the parent may hold torch's or ONNX Runtime's threads
            executor = ProcessPoolExecutor(
                workers, mp_context=get_context("spawn"), initializer=decoder_started
            )
        try:
            yield from decoded_batches(
                posters,
                size,
                batch_size,
                executor,
                in_flight_batches(workers),
                self.card.reads_text,
            )
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def _run_batches(
        self, batches: Iterable[DecodedBatch]
    ) -> Iterator[tuple[DecodedBatch, np.ndarray]]:
        """Each batch with the probabilities of its readable posters."""
        for batch in batches:
            if batch.paths:
                yield batch, self._run(batch.pixels, batch.texts)
            else:
                yield batch, np.zeros((0, len(self.genres)), np.float32)

    def _probabilities(
        self,
        paths: Sequence[Path],
        use_cache: bool,
        batch_size: int,
        show: bool,
        workers: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """(indices of the readable paths, their probabilities, {index: reason} otherwise)."""
        ok: list[int] = []
        chunks: list[np.ndarray] = []
        errors: dict[int, str] = {}
        batches = self._batches(paths, use_cache, batch_size, self.decoders(workers, len(paths)))
        with progress(len(paths), "predicting", enabled=show) as bar, closing(batches):
            for batch, probs in self._run_batches(batches):
                ok += batch.positions
                chunks.append(probs)
                errors.update((i, reason) for i, _, reason in batch.errors)
                bar.update(batch.size)
        probs = np.concatenate(chunks) if chunks else np.zeros((0, len(self.genres)), np.float32)
        return np.asarray(ok, dtype=np.int64), probs, errors

    # -- labelled posters -------------------------------------------------------------------
    def evaluate(
        self,
        posters: PosterCollection | Sequence[PosterRecord],
        *,
        split: str | None = None,
        out: str | Path | None = None,
        progress_bar: bool = True,
        title: str | None = None,
    ) -> dict[str, Any]:
        """Metrics on labelled posters (genres may be a subset or superset of the model's).

        `split` keeps one split of a collection; with `out`, writes `metrics.json` and the
        confusion-matrix or precision-recall picture there.
        """
        from postergenre.data.targets import infer_task
        from postergenre.evaluation.report import evaluate_multi_label, evaluate_single_label

        collection = (
            posters
            if isinstance(posters, PosterCollection)
            else PosterCollection(list(posters), "records")
        )
        subset = collection.split(split)
        if not subset.records:
            known = ", ".join(collection.splits) or "none"
            raise UserError(f"no posters in split {split!r} (splits: {known})")
        records = subset.records
        plots_dir = Path(out) if out is not None else None
        if plots_dir is not None:
            plots_dir.mkdir(parents=True, exist_ok=True)
        ok, probs, errors = self._probabilities(
            [r.path for r in records], True, PREDICT_BATCH, progress_bar
        )
        report_skipped(errors)
        kept = [records[i] for i in ok]
        shared = [g for g in self.genres if any(g in r.genres for r in kept)]
        title = title or split or "all posters"
        if self.task == "multi" and infer_task(kept, shared) == "multi":
            prevalence = self.card.training.get("train_prevalence")
            metrics = evaluate_multi_label(
                kept, probs, self.genres, self.thresholds, prevalence, plots_dir, title
            )
        else:  # single-label data: choose the most probable genre among those present
            metrics = evaluate_single_label(kept, probs, self.genres, plots_dir, title)
        metrics["unreadable"] = len(errors)
        if metrics["n"] == 0:
            raise UserError(
                "none of the posters carries a genre the model knows "
                f"(model genres: {', '.join(self.genres)})"
            )
        metrics = _finite_or_none(metrics)  # valid JSON: an undefined number is null, not NaN
        if plots_dir is not None:
            from postergenre.atomic import write_json

            write_json(plots_dir / "metrics.json", metrics)
        return metrics

    # -- explanations and export ------------------------------------------------------------
    def explain(
        self,
        poster: str | Path | Image.Image,
        genre: str | None = None,
        overlay_max_side: int | None = None,
    ) -> Explanation:
        """Grad-CAM heatmap of `genre` (any case; default: the most probable genre); the
        overlay is the poster's size, or at most `overlay_max_side` pixels on a side."""
        from postergenre.explain.gradcam import explain_poster

        fit = (self.input_spec.width, self.input_spec.height)
        image = poster if isinstance(poster, Image.Image) else decode_poster(poster, fit=fit)
        return explain_poster(self.model, self.card, image, genre, overlay_max_side)

    def export(
        self,
        out: str | Path,
        images: Sequence[str | Path] | None = None,
        quantize: str | None = None,
        calibration: Sequence[str | Path] | None = None,
        calibration_size: int = 256,
    ) -> dict[str, Any]:
        """Export to ONNX, checked against PyTorch (see `postergenre.export.onnx`); with
        `quantize="int8"`, then quantized, calibrated on `calibration_size` of the
        `calibration` poster files (training posters; see `postergenre.export.quantize`)."""
        from postergenre.export.onnx import export_onnx, require_onnx

        if quantize is None:
            return export_onnx(self.bundle, Path(out), images=images)
        if not calibration:
            raise UserError(f"{quantize} quantization needs calibration posters (training posters)")
        require_onnx()
        from postergenre.export.quantize import export_quantized

        return export_quantized(
            self.bundle, out, calibration, quantize, images=images, n_calibration=calibration_size
        )
