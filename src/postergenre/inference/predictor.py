"""`Predictor`: load a bundle by name or path and predict genres for posters.

The CLI's `predict` and `evaluate`, the web app and the benchmarks all go through this class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from postergenre.console import report_skipped
from postergenre.data.cache import PosterCache
from postergenre.data.decode import decode_poster, resize_poster
from postergenre.data.records import PosterRecord
from postergenre.data.targets import infer_task
from postergenre.data.transforms import to_model_input
from postergenre.errors import UserError
from postergenre.evaluation.report import evaluate_multi_label, evaluate_single_label
from postergenre.models.bundle import (
    DEFAULT_MODEL,
    ModelBundle,
    load_bundle,
    resolve_model,
)

RUNTIMES = ("torch", "onnx")


@dataclass
class Prediction:
    """Genres for one poster, most probable first."""

    path: str
    genres: list[tuple[str, float]]
    predicted: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "genres": [{"genre": g, "probability": round(p, 6)} for g, p in self.genres],
            "predicted": self.predicted,
        }


class Predictor:
    """Predict genres with a model bundle: `Predictor.from_pretrained("imdb-20").predict(paths)`."""

    def __init__(
        self,
        bundle: ModelBundle,
        name: str = "",
        runtime: str = "torch",
        bundle_dir: str | Path | None = None,
    ):
        if runtime not in RUNTIMES:
            raise UserError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        self.bundle = bundle
        self.model = bundle.model
        self.meta = bundle.meta
        self.genres = bundle.genres
        self.task = bundle.task
        self.input_spec = bundle.input_spec
        self.name = name or str(bundle.meta.get("name", ""))
        thresholds = bundle.meta.get("thresholds") or {}
        self.thresholds = np.array([float(thresholds.get(g, 0.5)) for g in self.genres])
        # runtime "onnx": predict_pixels runs the exported graph (cached per bundle content);
        # `model` stays the torch model for Grad-CAM and anything else that needs it.
        self.runtime = runtime
        self.onnx_runner = None
        if runtime == "onnx":
            from postergenre.inference.onnx_runtime import OnnxRunner, onnx_for_bundle

            self.onnx_runner = OnnxRunner(onnx_for_bundle(bundle_dir or bundle))

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path | None = None, runtime: str = "torch"
    ) -> Predictor:
        """Load a bundled model by name (default `imdb-20`) or a bundle/run folder by path;
        `runtime` is "torch" (default) or "onnx" (ONNX Runtime, exported once and cached)."""
        path = resolve_model(name_or_path)
        name = str(name_or_path or DEFAULT_MODEL)
        return cls(load_bundle(path), name=name, runtime=runtime, bundle_dir=path)

    # -- arrays -----------------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """An RGB image -> uint8 (H, W, 3) at the model's input size."""
        spec = self.input_spec
        return resize_poster(image, spec.width, spec.height, spec.resize)

    @torch.no_grad()
    def predict_pixels(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """uint8 (B, H, W, 3) -> probabilities (B, n_genres)."""
        out = []
        for start in range(0, len(pixels), batch_size):
            x = to_model_input(pixels[start : start + batch_size], self.input_spec.normalisation)
            if self.onnx_runner is not None:  # the graph already outputs probabilities
                out.append(self.onnx_runner(x.numpy()))
                continue
            logits = self.model(x)
            out.append((logits.softmax(1) if self.task == "single" else logits.sigmoid()).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.genres)), np.float32)

    def predicted_genres(self, probs: np.ndarray) -> list[str]:
        """The predicted set: the top genre (single) or genres above their thresholds (multi)."""
        if self.task == "single":
            return [self.genres[int(probs.argmax())]]
        return [g for g, p, t in zip(self.genres, probs, self.thresholds, strict=True) if p >= t]

    def to_prediction(self, path: str, probs: np.ndarray) -> Prediction:
        order = np.argsort(-probs, kind="stable")
        ranked = [(self.genres[i], float(probs[i])) for i in order]
        return Prediction(path, ranked, self.predicted_genres(probs))

    # -- files ------------------------------------------------------------------------------
    def predict_images(
        self, images: Sequence[Image.Image], names: Sequence[str]
    ) -> list[Prediction]:
        """Predict already-decoded RGB images."""
        if not images:
            return []
        probs = self.predict_pixels(np.stack([self.preprocess(im) for im in images]))
        return [self.to_prediction(n, p) for n, p in zip(names, probs, strict=True)]

    def predict(self, paths: Sequence[str | Path], batch_size: int = 32) -> list[Prediction]:
        """Predict poster files; a file that is not a usable image raises `PosterDecodeError`."""
        results: list[Prediction] = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            results += self.predict_images(
                [decode_poster(p) for p in chunk], [str(p) for p in chunk]
            )
        return results

    def predict_cached(
        self, paths: Sequence[Path], cache_dir: Path | None = None, progress: bool = True
    ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """Probabilities for many files through the decode cache: (indices of the readable
        paths, their probabilities, {index: error} for the unreadable ones)."""
        spec = self.input_spec
        cached = PosterCache(cache_dir, spec.width, spec.height, spec.resize).load(
            paths, progress=progress
        )
        ok = cached.ok
        probs = np.zeros((len(ok), len(self.genres)), dtype=np.float32)
        bar = tqdm(total=len(ok), desc="predicting", unit="img", disable=None if progress else True)
        with bar:
            for start in range(0, len(ok), 64):
                index = ok[start : start + 64]
                probs[start : start + len(index)] = self.predict_pixels(cached[index])
                bar.update(len(index))
        return ok, probs, cached.errors

    def predict_files(
        self, paths: Sequence[Path], cache_dir: Path | None = None, progress: bool = True
    ) -> tuple[list[Prediction], dict[int, str]]:
        """Predict many files through the decode cache; unreadable files are returned as errors."""
        ok, probs, errors = self.predict_cached(paths, cache_dir, progress)
        predictions = [self.to_prediction(str(paths[i]), p) for i, p in zip(ok, probs, strict=True)]
        return predictions, errors

    def evaluate(
        self,
        records: list[PosterRecord],
        cache_dir: Path | None = None,
        progress: bool = True,
        plots_dir: Path | None = None,
        title: str = "",
    ) -> dict[str, Any]:
        """Metrics on labelled records (genres may be a subset or superset of the model's);
        with `plots_dir`, also the confusion matrix or precision-recall picture."""
        ok, probs, errors = self.predict_cached([r.path for r in records], cache_dir, progress)
        report_skipped(errors)
        kept = [records[i] for i in ok]
        shared = [g for g in self.genres if any(g in r.genres for r in kept)]
        if self.task == "multi" and infer_task(kept, shared) == "multi":
            prevalence = self.meta.get("training", {}).get("train_prevalence")
            metrics = evaluate_multi_label(
                kept, probs, self.genres, self.thresholds, prevalence, plots_dir, title
            )
        else:  # single-label data: choose the most probable genre among those present
            metrics = evaluate_single_label(kept, probs, self.genres, plots_dir, title)
        metrics["unreadable"] = len(errors)
        return metrics
