"""`Predictor`: the one entrance for "what genres is this poster?".

    predictor = Predictor.from_pretrained("imdb-20")     # or a bundle / run folder
    predictions = predictor.predict("posters/")          # files, folders, globs
    predictions.write("preds.csv")                       # or .json / .jsonl / .parquet
    predictor.evaluate(collection, split="test")         # metrics on labelled posters
    predictor.explain("poster.jpg", genre="Horror")      # Grad-CAM heatmap

Every command (`predict`, `evaluate`, `explain`, `export`, `serve`) and the benchmarks go
through this class. With the ONNX runtime (the default where onnxruntime is installed), a
prediction imports neither torch nor scikit-learn nor matplotlib: the model card is JSON, the
poster is prepared with NumPy and the exported graph (made once, cached) runs in ONNX Runtime.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from postergenre.console import echo, progress, report_skipped, warn
from postergenre.data.decode import decode_poster
from postergenre.data.records import PosterCollection, PosterRecord
from postergenre.data.sources import PosterFiles, find_posters
from postergenre.errors import PosterDecodeError, UserError
from postergenre.inference.predictions import Prediction, Predictions
from postergenre.models.card import ModelCard, to_probabilities
from postergenre.models.catalog import DEFAULT_MODEL, resolve_model

if TYPE_CHECKING:
    from postergenre.explain.gradcam import Explanation
    from postergenre.models.bundle import ModelBundle

RUNTIMES = ("auto", "onnx", "torch")
PREDICT_BATCH = 32
# A collection this large goes through the decode cache (when allowed): re-runs skip decoding.
CACHE_MIN_POSTERS = 64


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
    "torch" (PyTorch) or "auto" (ONNX Runtime where it is installed).
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
        """The ONNX Runtime session (runtime "onnx"), made on first use: the first prediction
        of a bundle exports it once into the cache, so bad input fails before any export."""
        if self.runtime != "onnx":
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
        return OnnxRunner(path)

    # -- arrays -----------------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """An RGB poster -> uint8 (H, W, 3) at the model's input size."""
        return self.input_spec.resize_image(image)

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) at the input size -> probabilities (B, genres); a model that
        gives anything but finite probabilities is refused, never shown."""
        runner = self.onnx_runner
        if runner is not None:  # the graph already outputs probabilities
            probs = runner(self.input_spec.normalise(pixels))
        else:
            import torch

            with torch.no_grad():
                x = self.input_spec.normalisation.tensor(pixels)
                probs = to_probabilities(self.model(x), self.task).numpy()
        if not np.isfinite(probs).all():
            raise UserError(f"model {self.name} gave non-finite probabilities; it is damaged")
        return probs

    def predict_pixels(self, pixels: np.ndarray, batch_size: int = PREDICT_BATCH) -> np.ndarray:
        """uint8 (B, H, W, 3) at the input size -> probabilities (B, genres)."""
        out = [
            self._run(pixels[start : start + batch_size])
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
        cache: bool | None = None,
        batch_size: int = PREDICT_BATCH,
        progress_bar: bool = True,
    ) -> Predictions:
        """Genres for posters: files, folders, glob patterns, or decoded images.

        A file named alone that cannot be read raises `PosterDecodeError`; in a collection,
        unreadable files are skipped and listed in `Predictions.skipped` (and on stderr).
        `cache`: keep decoded posters in the cache (True), never (False), or for collections
        of at least `CACHE_MIN_POSTERS` posters (None, the default).
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
            probs = self._run(self.preprocess(decode_poster(path))[None])
            return Predictions(self.card, [str(path)], probs)
        use_cache = len(files.paths) >= CACHE_MIN_POSTERS if cache is None else cache
        ok, probs, errors = self._probabilities(files.paths, use_cache, batch_size, progress_bar)
        skipped = {str(files.paths[i]): reason for i, reason in sorted(errors.items())}
        report_skipped(errors)
        if not len(ok):
            raise UserError(f"none of the {len(files.paths)} posters could be read")
        return Predictions(self.card, [str(files.paths[i]) for i in ok], probs, skipped)

    def _probabilities(
        self, paths: Sequence[Path], use_cache: bool, batch_size: int, show: bool
    ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """(indices of the readable paths, their probabilities, {index: reason} otherwise)."""
        if use_cache:
            from postergenre.data.cache import PosterCache

            spec = self.input_spec
            cached = PosterCache(
                self.cache_dir, spec.width, spec.height, spec.resize, spec.interpolation
            ).load(paths, progress=show)
            ok = cached.ok
            probs = np.zeros((len(ok), len(self.genres)), dtype=np.float32)
            with progress(len(ok), "predicting", enabled=show) as bar:
                for start in range(0, len(ok), batch_size):
                    rows = ok[start : start + batch_size]
                    probs[start : start + len(rows)] = self.predict_pixels(cached[rows])
                    bar.update(len(rows))
            return ok, probs, cached.errors
        return self._stream(paths, batch_size, show)

    def _stream(
        self, paths: Sequence[Path], batch_size: int, show: bool
    ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """Decode the next batch in a worker thread while the model runs on this one."""

        def decode(start: int) -> tuple[list[int], list[np.ndarray], dict[int, str]]:
            kept, pixels, errors = [], [], {}
            for i in range(start, min(start + batch_size, len(paths))):
                try:
                    pixels.append(self.preprocess(decode_poster(paths[i])))
                    kept.append(i)
                except PosterDecodeError as exc:
                    errors[i] = str(exc)
            return kept, pixels, errors

        ok: list[int] = []
        chunks: list[np.ndarray] = []
        errors: dict[int, str] = {}
        starts = list(range(0, len(paths), batch_size))
        with (
            ThreadPoolExecutor(1, thread_name_prefix="postergenre-decode") as pool,
            progress(len(paths), "predicting", enabled=show) as bar,
        ):
            pending = pool.submit(decode, starts[0]) if starts else None
            for n, _ in enumerate(starts):
                assert pending is not None
                kept, pixels, failed = pending.result()
                pending = pool.submit(decode, starts[n + 1]) if n + 1 < len(starts) else None
                errors.update(failed)
                if kept:
                    chunks.append(self._run(np.stack(pixels)))
                    ok += kept
                bar.update(len(kept) + len(failed))
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

        image = poster if isinstance(poster, Image.Image) else decode_poster(poster)
        return explain_poster(self.model, self.card, image, genre, overlay_max_side)

    def export(self, out: str | Path, images: Sequence[str | Path] | None = None) -> dict[str, Any]:
        """Export to ONNX, checked against PyTorch (see `postergenre.export.onnx`)."""
        from postergenre.export.onnx import export_onnx

        return export_onnx(self.bundle, Path(out), images=images)
