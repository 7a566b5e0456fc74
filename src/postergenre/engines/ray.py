"""The Ray engine: score or embed posters on a Ray cluster (or a Ray started on this machine).

    predictor.predict_to("posters/", "preds.parquet", engine="ray")            # Ray here
    predictor.predict_to("list.txt", "preds.csv", engine="ray", address="head:6379")
    PosterIndex.build(records, engine="ray")                                  # embeddings

The driver (this process) lists the posters and hands them to Ray Data in chunks of paths
(`ray.data.from_arrow`); `map_batches` runs them through a pool of actors, each holding the model
(`ModelScorer`: whatever the caller's loader makes, e.g. a `Predictor` over the exported ONNX
graph shipped as bytes from the driver; `EmbeddingScorer`: the frozen PyTorch backbone, whose
weights ship with the package). An actor reads and decodes its posters itself (`decode_batch`,
as the local engine's decoders do), so only paths go out and probabilities or embeddings come
back. The driver gathers the results in order and hands them to the same journal, writer and
skipped-poster report as the local engine: rows, columns and messages are the same.

Every node must have PosterGenre installed (`pip install 'postergenre[ray]'`) and see the posters
under the same paths: relative paths are read from the driver's working directory where it
exists, so name posters by absolute paths on shared storage when the cluster has other machines.
Ray is imported only when the engine runs (`ray_cluster`): the core install works without it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from postergenre.console import progress
from postergenre.engines.decoding import DecodedBatch, Model, decode_batch, numbered_chunks
from postergenre.engines.ray_cluster import (
    RayRunFailed,
    WorkerPlan,
    import_ray,
    plan_workers,
    quiet_ray_data,
    ray_error_line,
    ray_session,
)
from postergenre.errors import UserError

if TYPE_CHECKING:
    from postergenre.data.cache import CachedArrays
    from postergenre.data.preprocess import InputSpec
    from postergenre.data.text import OcrSetting

# Posters the driver hands Ray at a time: each chunk is one Ray Dataset, whose actors load the
# model once. Larger chunks start actors less often; the driver holds a chunk's paths (about
# 100 bytes each). A chunk grows with the pool so that starting actors stays a small share.
RAY_CHUNK = 100_000
CHUNK_PER_WORKER = 2_000
# Posters per Ray block: a few model batches, and at least two blocks per actor.
BLOCK_BATCHES = 4
# Actors that die are not restarted: Ray cannot reliably restart an actor whose arguments live
# in its object store (ray-project/ray#53727) and says so on stderr for every actor it might
# restart. A run whose actor dies stops; its journal keeps what was done (`--resume`).
NO_RESTARTS = 0

# Makes a `ModelScorer`'s model on its worker, given its threads; pickled to every actor.
ModelLoader = Callable[[int], Model]


# -- the actors ---------------------------------------------------------------------------------


class _Scorer:
    """A Ray Data actor: decode a batch of poster paths and compute one row per poster (zeros
    where a poster cannot be read, with the reason the local engine gives).

    The model loads on the first batch. What goes wrong on a worker (a damaged model, a bug)
    comes back as the batch's `failure` (the message of a `UserError`, else the exception's
    type and message) for the driver to raise: exceptions Ray carries back lose their type."""

    def __init__(self, spec: InputSpec, dim: int, cwd: str, ocr: OcrSetting | None = None):
        self.spec, self.dim, self.ocr, self.cwd = spec, dim, ocr, cwd
        self.loaded = False
        self.failure = ""

    def load(self) -> None:
        """Load the model (once, in the worker)."""
        raise NotImplementedError

    def values(self, pixels: np.ndarray, texts: list[str] | None) -> np.ndarray:
        """uint8 (B, H, W, 3) (and their OCR text, when asked for) -> float32 (B, dim)."""
        raise NotImplementedError

    def _start(self) -> None:
        from postergenre._allocator import tune_allocator

        tune_allocator()
        if os.path.isdir(self.cwd):  # relative paths mean what they mean on the driver
            os.chdir(self.cwd)
        self.load()
        self.loaded = True

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        values = np.zeros((len(paths), self.dim), np.float32)
        error = np.full(len(paths), "", dtype=object)
        if not self.failure:
            try:
                if not self.loaded:
                    self._start()
                kept, pixels, errors, texts = decode_batch(paths, self.spec, self.ocr)
                if kept:
                    values[kept] = self.values(pixels, texts)
                for i, reason in errors:
                    error[i] = reason
            except UserError as exc:
                self.failure = str(exc)
            except Exception as exc:
                self.failure = f"a Ray worker failed: {type(exc).__name__}: {exc}"
        return {
            "position": np.asarray(batch["position"]),
            "values": values,
            "error": error,
            "failure": np.full(len(paths), self.failure, dtype=object),
        }


class ModelScorer(_Scorer):
    """Rows of the model `load_model(threads)` makes on the worker: for genre probabilities, a
    `Predictor` over the exported ONNX graph (its preprocessing and its check that
    probabilities are finite, exactly as on the driver)."""

    def __init__(
        self,
        load_model: ModelLoader,
        spec: InputSpec,
        dim: int,
        threads: int,
        cwd: str,
        ocr: OcrSetting | None = None,
    ):
        super().__init__(spec, dim, cwd, ocr)
        self.load_model, self.threads = load_model, threads

    def load(self) -> None:
        self.model = self.load_model(self.threads)

    def values(self, pixels: np.ndarray, texts: list[str] | None) -> np.ndarray:
        return self.model(pixels, texts)


class EmbeddingScorer(_Scorer):
    """Pooled embeddings of a frozen backbone (`embed_pixels`, as the local engine computes)."""

    def __init__(self, arch: str, spec: InputSpec, dim: int, threads: int, cwd: str):
        super().__init__(spec, dim, cwd)
        self.arch, self.threads = arch, threads

    def load(self) -> None:
        import torch

        from postergenre.models.embeddings import frozen_backbone

        torch.set_num_threads(self.threads)
        frozen_backbone(self.arch)

    def values(self, pixels: np.ndarray, texts: list[str] | None) -> np.ndarray:
        from postergenre.models.embeddings import embed_pixels

        return embed_pixels(self.arch, pixels, self.spec)


# -- running a pool of actors over paths --------------------------------------------------------


@dataclass
class ScoredBlock:
    """One block of results, in the order the posters were given: each poster's position in
    the stream, path, row (zeros if unreadable) and the reason it could not be read ("" if it
    could)."""

    positions: list[int]
    paths: list[Path]
    values: np.ndarray
    errors: list[str]


def run_scorers(
    posters: Iterable[Path],
    scorer: type[_Scorer],
    arguments: dict[str, Any],
    batch_size: int,
    plan: WorkerPlan,
) -> Iterator[ScoredBlock]:
    """Run `scorer(**arguments)` actors (`plan.workers` of them, `plan.threads` CPUs each) over
    `posters` (read lazily, a chunk at a time), yielding results in order. Call inside
    `ray_session`."""
    import pyarrow as pa
    import ray.data

    chunk_size = max(RAY_CHUNK, CHUNK_PER_WORKER * plan.workers)
    for chunk in numbered_chunks(posters, chunk_size):
        block = max(1, min(batch_size * BLOCK_BATCHES, math.ceil(len(chunk) / (2 * plan.workers))))
        table = pa.table(
            {"position": [i for i, _ in chunk], "path": [str(p) for _, p in chunk]},
            schema=pa.schema([("position", pa.int64()), ("path", pa.string())]),
        )
        blocks = [table.slice(start, block) for start in range(0, len(chunk), block)]
        with warnings.catch_warnings():
            # Ray 2.60 takes max_restarts only among the remote arguments it deprecates.
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
            dataset = ray.data.from_arrow(blocks).map_batches(
                scorer,
                batch_size=batch_size,
                compute=ray.data.ActorPoolStrategy(size=min(plan.workers, len(blocks))),
                fn_constructor_kwargs=arguments,
                batch_format="numpy",
                num_cpus=plan.threads,
                max_restarts=NO_RESTARTS,
            )
        context = dataset.context
        context.execution_options.preserve_order = True  # rows in the order of the posters
        context.execution_options.verbose_progress = False
        context.enable_progress_bars = False  # the driver shows one bar, as the local engine
        context.enable_auto_log_stats = False
        first = chunk[0][0]
        try:
            for result in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                failure = next((str(f) for f in result["failure"] if f), "")
                if failure:
                    raise RayRunFailed(failure)
                positions = [int(i) for i in result["position"]]
                yield ScoredBlock(
                    positions,
                    [chunk[i - first][1] for i in positions],
                    np.asarray(result["values"], dtype=np.float32),
                    [str(e) for e in result["error"]],
                )
        except UserError:
            raise
        except Exception as exc:  # an actor died, a node was lost, ...: in Ray's own words
            raise RayRunFailed(f"the Ray run failed: {ray_error_line(exc)}") from exc


def _planned_scorers(
    posters: Iterable[Path],
    scorer: type[_Scorer],
    arguments: dict[str, Any],
    batch_size: int,
    workers: int | None,
) -> Iterator[ScoredBlock]:
    """`run_scorers` with `workers` actors (default: one per CPU of the cluster), each given
    its share of threads; planned now, so a refused plan fails before any progress is shown.
    Call inside `ray_session`."""
    quiet_ray_data()
    plan = plan_workers(workers)
    arguments = {**arguments, "threads": plan.threads}
    return run_scorers(posters, scorer, arguments, batch_size, plan)


# -- what the commands call ---------------------------------------------------------------------


def ray_scored_batches(
    posters: Iterable[Path],
    load_model: ModelLoader,
    spec: InputSpec,
    dim: int,
    *,
    ocr: OcrSetting | None = None,
    batch_size: int,
    workers: int | None = None,
    address: str | None = None,
) -> Iterator[tuple[DecodedBatch, np.ndarray]]:
    """Like the local engine's scored batches: each block of `posters` (read lazily) as a
    `DecodedBatch` (no pixels: they stay on the workers) with the `dim` rows `load_model`'s
    model gives its readable posters, in order. Ray starts only if there is a poster."""
    remaining = iter(posters)
    first = next(remaining, None)
    if first is None:  # nothing left to score (a resumed run that was done): no Ray to start
        return
    arguments = {
        "load_model": load_model,  # Ray Data puts the arguments in the object store once
        "spec": spec,
        "dim": dim,
        "cwd": os.getcwd(),
        "ocr": ocr,
    }
    with ray_session(address):
        todo = chain([first], remaining)
        for block in _planned_scorers(todo, ModelScorer, arguments, batch_size, workers):
            ok = [i for i, error in enumerate(block.errors) if not error]
            unreadable = [
                (position, path, error)
                for position, path, error in zip(
                    block.positions, block.paths, block.errors, strict=True
                )
                if error
            ]
            pixels = np.zeros((len(ok), 0, 0, 3), np.uint8)  # they stay on the workers
            positions, kept = [block.positions[i] for i in ok], [block.paths[i] for i in ok]
            yield DecodedBatch(positions, kept, pixels, unreadable), block.values[ok]


def ray_embeddings(
    arch: str,
    paths: Sequence[Path],
    cache_dir: Path | None = None,
    progress_bar: bool = True,
    *,
    address: str | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
) -> CachedArrays:
    """`compute_embeddings` on Ray: the embeddings of `paths`, through the same embedding cache
    (only posters not cached yet are embedded, on the workers; Ray starts only if there are
    any)."""
    from postergenre.data.cache import fill_store
    from postergenre.models import get_arch
    from postergenre.models.embeddings import EMBED_BATCH, embedding_store, frozen_backbone

    import_ray()
    store = embedding_store(arch, cache_dir)
    arguments: dict[str, Any] = {
        "arch": arch,
        "spec": get_arch(arch).input,
        "dim": frozen_backbone(arch).num_features,
        "cwd": os.getcwd(),
    }

    def compute(indices: list[int]) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        if not indices:
            return
        todo = (paths[i] for i in indices)
        with ray_session(address):
            batch = batch_size or EMBED_BATCH
            blocks = _planned_scorers(todo, EmbeddingScorer, arguments, batch, workers)
            desc = f"embedding ({arch}) on Ray"
            with progress(len(indices), desc, "img", enabled=progress_bar) as bar:
                for block in blocks:
                    for position, vector, error in zip(
                        block.positions, block.values, block.errors, strict=True
                    ):
                        yield indices[position], (None if error else vector), (error or None)
                    bar.update(len(block.positions))

    return fill_store(store, paths, compute)
