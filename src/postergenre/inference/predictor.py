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

Collections go through one pipeline (`predict`, `predict_to`, `evaluate`): the local engine
(`postergenre.engines.local`) decodes them in batches and runs the model on each here;
`predict_to` streams into a file (`postergenre.inference.streaming`), on Ray if asked.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from postergenre.console import echo, report_skipped, warn
from postergenre.data.decode import decode_poster
from postergenre.data.records import PosterCollection, PosterRecord
from postergenre.data.sources import PosterFiles, PosterSources, find_posters
from postergenre.data.text import read_poster_texts
from postergenre.engines.local import LocalEngine, decoding_workers
from postergenre.errors import UserError
from postergenre.inference.predictions import Prediction, Predictions
from postergenre.inference.streaming import StreamSummary, stream_predictions
from postergenre.models.card import ModelCard, to_probabilities
from postergenre.models.catalog import DEFAULT_MODEL, is_graph_file, resolve_model
from postergenre.models.threshold_policy import DEFAULT_POLICY, apply_threshold_policy

if TYPE_CHECKING:
    from postergenre.explain.gradcam import Explanation
    from postergenre.models.bundle import ModelBundle

RUNTIMES = ("auto", "onnx", "openvino", "torch")
PREDICT_BATCH = 32


def onnx_available() -> bool:
    """Whether ONNX Runtime is installed (checked without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


class Predictor:
    """Predict genres with a model bundle: `Predictor.from_pretrained("imdb-20").predict(paths)`.

    `runtime` is "onnx" (ONNX Runtime over the exported graph, exported once and cached),
    "openvino" (OpenVINO over the same graph; the `openvino` extra), "torch" (PyTorch) or
    "auto" (ONNX Runtime where it is installed). A `graph` (an opened exported file, see
    `graph_model.open_graph`) is a model without PyTorch weights: it predicts and evaluates,
    and refuses Grad-CAM and export in one line.

    `threshold_policy` (multi-label models) picks the thresholds "predicted" means:
    "card" (default: the ones the model was built with), "shared" or "per-genre", all chosen
    on validation posters when the model was trained (`models.threshold_policy`).
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
        graph: Any = None,
        threshold_policy: str = DEFAULT_POLICY,
    ):
        if runtime not in RUNTIMES:
            raise UserError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if bundle is None and graph is None and (card is None or folder is None):
            raise ValueError("give a loaded bundle, a card and its folder, or an opened graph")
        self._bundle = bundle
        self.graph = graph
        if graph is not None:
            card, runtime = graph.card, graph.runtime
        stored: ModelCard = bundle.card if bundle is not None else card  # type: ignore[assignment]
        # The card as stored (what evaluate compares every policy from) and the one predicting
        # with the policy's thresholds (what every decision reads).
        self.stored_card = stored
        self.threshold_policy = threshold_policy
        self.card: ModelCard = apply_threshold_policy(stored, threshold_policy)
        self.folder = Path(folder) if folder is not None else None
        self.name = name or self.card.name or (self.folder.name if self.folder else "")
        self.cache_dir = cache_dir
        self.genres = list(self.card.genres)
        self.task = self.card.task
        self.input_spec = self.card.input
        self.thresholds = np.array(self.card.thresholds or [0.5] * len(self.genres))
        self._runner: Any = graph
        self._auto = runtime == "auto"
        self.runtime = ("onnx" if onnx_available() else "torch") if self._auto else runtime
        if self.runtime == "openvino":
            from postergenre.inference.openvino_runtime import require_openvino

            require_openvino()  # refuses now, with how to install it, if it is missing
        self._ocr = self.card.text.ocr if self.card.text is not None else None
        if self.card.text is not None:
            self.card.text.check_installed()  # refuses now, with how to install what is missing

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        runtime: str = "auto",
        cache_dir: Path | None = None,
        threshold_policy: str = DEFAULT_POLICY,
    ) -> Predictor:
        """Load a bundled model by name (default `imdb-20`; any case), a bundle/run folder, or
        an exported graph file (`.onnx`, fp32 or int8, run by ONNX Runtime or OpenVINO),
        deciding with the thresholds of `threshold_policy` (see the class).

        For a bundle only the card is read here; the PyTorch model loads when something
        needs it. A graph is opened and checked now (`graph_model.open_graph`)."""
        folder = resolve_model(name_or_path)
        if is_graph_file(folder):
            from postergenre.inference.graph_model import open_graph

            graph = open_graph(folder, runtime)
            return cls(graph=graph, name=folder.name, runtime=runtime, cache_dir=cache_dir,
                       threshold_policy=threshold_policy)  # fmt: skip
        card = ModelCard.read(folder)
        name = card.name or str(name_or_path or DEFAULT_MODEL)
        return cls(card=card, folder=folder, name=name, runtime=runtime, cache_dir=cache_dir,
                   threshold_policy=threshold_policy)  # fmt: skip

    # -- the model, loaded on first use ------------------------------------------------------
    @property
    def bundle(self) -> ModelBundle:
        """The PyTorch model and card (loaded once, on first use); a graph has none."""
        if self.graph is not None:
            from postergenre.inference.graph_model import graph_only_error

            raise graph_only_error(self.graph.path, self.card.name, "the PyTorch model")
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
                _ = self.bundle  # a fallback that fails too is reported alone, unannounced
                warn(f"{exc}; predicting with PyTorch instead")
                self.runtime = "torch"
        return self._runner

    @onnx_runner.setter
    def onnx_runner(self, runner: Any) -> None:
        self._runner = runner

    def ready(self) -> None:
        """Load what the runtime runs (the exported graph's runner, or the PyTorch model), so
        that a bad bundle is refused in one line before any progress is shown."""
        if self.onnx_runner is None:
            _ = self.bundle

    @functools.cached_property
    def digest(self) -> str:
        """The SHA-256 of the model's bundle (`graph_cache.model_digest`), computed once: what
        its exported graph and a predictions journal are bound to."""
        from postergenre.inference.graph_cache import model_digest

        if self.graph is not None:
            return str(self.graph.digest)
        return model_digest(self.folder, self._bundle if self.folder is None else None)

    def _onnx_runner(self) -> Any:
        """The runner of the bundle's cached graph, exported (again) when the cache holds no
        graph exported from this very bundle. What was wrong with the cached one is said once
        the new one runs: a failing export is reported alone."""
        from postergenre.inference.graph_cache import GraphCache

        cache = GraphCache.of(self.card.architecture, self.digest, self.cache_dir)
        problem = cache.problem()
        if problem is None:
            try:
                return self._graph_runner(cache.path)
            except UserError as exc:  # a graph this runtime cannot load is exported again
                problem = str(exc)
        from postergenre.export.onnx import export_onnx

        bundle = self.bundle  # a damaged bundle fails here, before anything is announced
        cache.store(lambda path: export_onnx(bundle, path))
        runner = self._graph_runner(cache.path)
        if problem:
            warn(f"{problem}: exported it again from model {self.name}")
        else:
            echo(f"exported model {self.name} to ONNX once (cached in {cache.path.parent})")
        return runner

    def _graph_runner(self, path: Path) -> Any:
        if self.runtime == "openvino":
            from postergenre.inference.openvino_runtime import OpenVinoRunner

            return OpenVinoRunner(path)
        from postergenre.inference.onnx_runtime import OnnxRunner

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
            texts = read_poster_texts(pixels, self.card.text.ocr) if texts is None else texts
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
        self.ready()
        ok, probs, errors = self.local_engine.values(
            files.paths, cache, batch_size, workers, progress_bar
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
        writes them), streaming through the journal `out.partial`: memory stays flat whatever
        the collection's size (`postergenre.inference.streaming`). `workers` decoding processes
        (see `decoders`) feed batches of `batch_size` to the model here.

        `resume` continues the journal of an unfinished run, skipping the posters already in
        it; without it, an existing journal is an error. Unreadable posters are skipped,
        counted by reason and listed (on stderr too); a run in which no poster can be read is
        an error. `cache`: keep decoded posters in the cache (off by default).

        `engine="ray"` scores on Ray instead (`postergenre.engines.ray`): on the cluster at
        `address`, or on a Ray started here, with `workers` actors (default: one per CPU of the
        cluster). Rows, journal and skipped posters are those of the local engine.
        """
        return stream_predictions(
            self,
            posters,
            out,
            resume=resume,
            workers=workers,
            batch_size=batch_size,
            cache=cache,
            top=top,
            progress_bar=progress_bar,
            engine=engine,
            address=address,
        )

    def decoders(self, workers: int | None, posters: int) -> int:
        """Decoding processes for `posters` posters (see `engines.local.decoding_workers`)."""
        return decoding_workers(workers, posters)

    @property
    def local_engine(self) -> LocalEngine:
        """The local engine over this model: posters decoded here, probabilities out."""
        return LocalEngine(self.input_spec, self._run, len(self.genres), self._ocr, self.cache_dir)

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
        from postergenre.evaluation.report import evaluate_records

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
        self.ready()
        plots_dir = Path(out) if out is not None else None
        if plots_dir is not None:
            plots_dir.mkdir(parents=True, exist_ok=True)
        ok, probs, errors = self.local_engine.values(
            [r.path for r in records], True, PREDICT_BATCH, show=progress_bar
        )
        report_skipped(errors)
        return evaluate_records(
            [records[i] for i in ok],
            probs,
            self.stored_card,
            self.thresholds,
            unreadable=len(errors),
            plots_dir=plots_dir,
            title=title or split or "all posters",
            policy=self.threshold_policy,
        )

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

        self.check_explainable()
        fit = (self.input_spec.width, self.input_spec.height)
        image = poster if isinstance(poster, Image.Image) else decode_poster(poster, fit=fit)
        return explain_poster(self.model, self.card, image, genre, overlay_max_side)

    @property
    def has_weights(self) -> bool:
        """Whether the model has PyTorch weights (a bundle), which Grad-CAM and export need."""
        return self.graph is None

    def check_explainable(self) -> None:
        """Refuse Grad-CAM, in one line, for a model without PyTorch weights."""
        if self.graph is not None:
            from postergenre.inference.graph_model import graph_only_error

            raise graph_only_error(self.graph.path, self.card.name, "Grad-CAM (explain)")

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

        if self.graph is not None:
            from postergenre.inference.graph_model import quantize_graph

            return quantize_graph(self.graph, out, quantize, calibration, calibration_size)
        if quantize is None:
            return export_onnx(self.bundle, Path(out), images=images)
        if not calibration:
            raise UserError(f"{quantize} quantization needs calibration posters (training posters)")
        require_onnx()
        from postergenre.export.quantize import export_quantized

        return export_quantized(
            self.bundle, out, calibration, quantize, images=images, n_calibration=calibration_size
        )
