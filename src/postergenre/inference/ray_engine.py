"""The Ray engine: score or embed posters on a Ray cluster (or a Ray started on this machine).

    predictor.predict_to("posters/", "preds.parquet", engine="ray")            # Ray here
    predictor.predict_to("list.txt", "preds.csv", engine="ray", address="head:6379")
    PosterIndex.build(records, engine="ray")                                  # embeddings

The driver (this process) lists the posters and hands them to Ray Data in chunks of paths
(`ray.data.from_arrow`); `map_batches` runs them through a pool of actors, each holding the model
(`ProbabilityScorer`: the exported ONNX graph in ONNX Runtime, shipped as bytes from the driver;
`EmbeddingScorer`: the frozen PyTorch backbone, whose weights ship with the package). An actor
reads and decodes its posters itself (`decode_batch`, as the local engine's decoders do), so
only paths go out and probabilities or embeddings come back. The driver gathers the results in
order and hands them to the same journal, writer and skipped-poster report as the local engine:
rows, columns and messages are the same.

Every node must have PosterGenre installed (`pip install 'postergenre[ray]'`) and see the posters
under the same paths: relative paths are read from the driver's working directory where it
exists, so name posters by absolute paths on shared storage when the cluster has other machines.
Ray is imported here only, and only when the engine runs: the core install works without it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from postergenre.console import echo, progress
from postergenre.errors import UserError
from postergenre.inference.batches import DecodedBatch, Size, decode_batch

if TYPE_CHECKING:
    from postergenre.data.cache import CachedArrays
    from postergenre.models.card import ModelCard

ENGINES = ("local", "ray")
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
# Seconds to wait for a cluster's address to answer before giving up (Ray itself retries for
# minutes, logging every few seconds).
CONNECT_TIMEOUT = 10.0


class RayUnavailable(UserError):
    """The Ray extra is not installed."""


class AddressWithoutRay(UserError):
    """A Ray cluster's address was given for the local engine."""

    hint = "--address goes with --engine ray"


class RayRunFailed(UserError):
    """Ray could not be started or joined, or a run on it failed."""


def check_engine(engine: str, address: str | None = None) -> None:
    """Refuse, before any work, an unknown engine, an address without the Ray engine, the Ray
    engine without Ray installed, or an address where nothing answers."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if address is not None and engine != "ray":
        raise AddressWithoutRay("an address names a Ray cluster: it goes with the ray engine only")
    if engine == "ray":
        _import_ray()
        if address is not None:
            _check_reachable(address)


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayUnavailable("the Ray engine needs Ray: pip install 'postergenre[ray]'") from None
    return ray


# -- a Ray to run on ----------------------------------------------------------------------------


def _check_reachable(address: str) -> None:
    """Fail fast, in one line, when nothing answers at `address` (host:port or ray://host:port)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise RayRunFailed(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}"
        ) from None


@contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Ray for the duration of a run. A Ray this process already started or joined is used as it
    is; otherwise join the cluster at `address`, or, without one, start Ray on this machine
    (every available core, no dashboard) and shut it down afterwards."""
    ray = _import_ray()
    if ray.is_initialized():
        yield
        return
    from postergenre._cpu import available_cores

    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address is not None:
            _check_reachable(address)
            echo(f"joining the Ray cluster at {address}")
            ray.init(address=address, **quiet)
        else:
            cores = available_cores()
            echo(f"starting Ray on this machine ({cores} cores)")
            ray.init(address="local", num_cpus=cores, include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"join the Ray cluster at {address}" if address else "start Ray"
        raise RayRunFailed(f"cannot {where}: {_error_line(exc)}") from None
    try:
        yield
    finally:
        ray.shutdown()


@dataclass
class WorkerPlan:
    """How many actors to start and the cores (ONNX Runtime or torch threads) each gets."""

    workers: int
    threads: int


def plan_workers(workers: int | None) -> WorkerPlan:
    """Actors for the Ray this process is connected to: `workers` (default: one per CPU of the
    cluster), each with as many threads as leave every actor room on the smallest node."""
    import ray

    nodes = [
        int(node["Resources"].get("CPU", 0))
        for node in ray.nodes()
        if node.get("Alive") and node["Resources"].get("CPU", 0) >= 1
    ]
    if not nodes:
        raise RayRunFailed("the Ray cluster has no node with a CPU")
    total = sum(nodes)
    if workers is None:
        workers = total
    if workers < 1:
        raise UserError(f"the Ray engine needs 1 worker or more, not {workers}")
    if workers > total:
        raise UserError(f"{workers} workers need {workers} CPUs; the Ray cluster has {total}")
    per_node = math.ceil(workers / len(nodes))
    return WorkerPlan(workers, max(1, min(nodes) // per_node))


_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception)\b.*:")


def _error_line(exc: BaseException) -> str:
    """One line for an exception Ray raised: the last `SomeError: message` line of the
    traceback text it carries, else its first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if _ERROR_LINE.match(line)]
    return (named or lines or [type(exc).__name__])[-1 if named else 0]


# -- the actors ---------------------------------------------------------------------------------


class _Scorer:
    """A Ray Data actor: decode a batch of poster paths and compute one row per poster (zeros
    where a poster cannot be read, with the reason the local engine gives).

    The model loads on the first batch. What goes wrong on a worker (a damaged model, a bug)
    comes back as the batch's `failure` (the message of a `UserError`, else the exception's
    type and message) for the driver to raise: exceptions Ray carries back lose their type."""

    def __init__(self, size: Size, dim: int, cwd: str, with_text: bool = False):
        self.size, self.dim, self.with_text, self.cwd = size, dim, with_text, cwd
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
                kept, pixels, errors, texts = decode_batch(paths, self.size, self.with_text)
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


class ProbabilityScorer(_Scorer):
    """Genre probabilities: a `Predictor` over the exported ONNX graph (its preprocessing and
    its check that probabilities are finite, exactly as on the driver)."""

    def __init__(
        self,
        predictor_class: type,
        card: ModelCard,
        name: str,
        graph: bytes,
        size: Size,
        threads: int,
        cwd: str,
    ):
        super().__init__(size, len(card.genres), cwd, card.reads_text)
        self.predictor_class = predictor_class  # the driver's `Predictor` (no import cycle)
        self.card, self.name, self.graph, self.threads = card, name, graph, threads

    def load(self) -> None:
        from postergenre.inference.onnx_runtime import OnnxRunner

        # The folder is never read: the session is given, made from the driver's graph.
        self.predictor = self.predictor_class(
            card=self.card, folder=Path(), name=self.name, runtime="onnx"
        )
        self.predictor.onnx_runner = OnnxRunner(self.graph, self.threads)

    def values(self, pixels: np.ndarray, texts: list[str] | None) -> np.ndarray:
        return self.predictor.predict_pixels(pixels, len(pixels), texts)


class EmbeddingScorer(_Scorer):
    """Pooled embeddings of a frozen backbone (`embed_pixels`, as the local engine computes)."""

    def __init__(self, arch: str, size: Size, dim: int, threads: int, cwd: str):
        super().__init__(size, dim, cwd)
        self.arch, self.threads = arch, threads

    def load(self) -> None:
        import torch

        from postergenre.models import get_arch
        from postergenre.models.embeddings import frozen_backbone

        torch.set_num_threads(self.threads)
        self.spec = get_arch(self.arch).input
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


def _chunks(posters: Iterable[Path], size: int) -> Iterator[list[tuple[int, Path]]]:
    items = enumerate(posters)
    while chunk := list(islice(items, size)):
        yield chunk


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
    for chunk in _chunks(posters, chunk_size):
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
            raise RayRunFailed(f"the Ray run failed: {_error_line(exc)}") from exc


def _quiet_ray_data() -> None:
    """Ray Data logs every execution's plan and progress, that its bars are off, and the
    stack of a failure on stderr: the driver reports all of that itself, in a line each."""
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)


# -- what the commands call ---------------------------------------------------------------------


def ray_scored_batches(
    predictor: Any,  # a `Predictor` (the caller: not imported here)
    posters: Iterable[Path],
    batch_size: int,
    workers: int | None = None,
    address: str | None = None,
) -> Iterator[tuple[DecodedBatch, np.ndarray]]:
    """Like the local engine's batches: each block of `posters` (read lazily) as a
    `DecodedBatch` (no pixels: they stay on the workers) with the probabilities of its readable
    posters, in order. `Predictor.predict_to(..., engine="ray")` writes them."""
    runner = predictor.onnx_runner  # the graph, exported once into the cache if need be
    if runner is None or runner.path is None:
        raise UserError(
            "the Ray engine runs the model's ONNX graph: choose the onnx runtime (or auto, with "
            "onnxruntime installed)"
        )
    remaining = iter(posters)
    first = next(remaining, None)
    if first is None:  # nothing left to score (a resumed run that was done): no Ray to start
        return
    spec = predictor.input_spec
    size: Size = (spec.width, spec.height, spec.resize, spec.interpolation)
    graph = runner.path.read_bytes()
    with ray_session(address):
        _quiet_ray_data()
        plan = plan_workers(workers)
        arguments = {
            "predictor_class": type(predictor),
            "card": predictor.card,
            "name": predictor.name,
            "graph": graph,  # Ray Data puts the arguments in the object store once
            "size": size,
            "threads": plan.threads,
            "cwd": os.getcwd(),
        }
        blocks = run_scorers(
            chain([first], remaining), ProbabilityScorer, arguments, batch_size, plan
        )
        for block in blocks:
            ok = [i for i, error in enumerate(block.errors) if not error]
            yield (
                DecodedBatch(
                    [block.positions[i] for i in ok],
                    [block.paths[i] for i in ok],
                    np.zeros((len(ok), 0, 0, 3), np.uint8),
                    [
                        (position, path, error)
                        for position, path, error in zip(
                            block.positions, block.paths, block.errors, strict=True
                        )
                        if error
                    ],
                ),
                block.values[ok],
            )


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

    _import_ray()
    spec = get_arch(arch).input
    store = embedding_store(arch, cache_dir)
    arguments: dict[str, Any] = {
        "arch": arch,
        "size": (spec.width, spec.height, spec.resize, spec.interpolation),
        "dim": frozen_backbone(arch).num_features,
        "cwd": os.getcwd(),
    }

    def compute(indices: list[int]) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        if not indices:
            return
        with ray_session(address):
            _quiet_ray_data()
            plan = plan_workers(workers)
            arguments["threads"] = plan.threads
            blocks = run_scorers(
                (paths[i] for i in indices),
                EmbeddingScorer,
                arguments,
                batch_size or EMBED_BATCH,
                plan,
            )
            desc = f"embedding ({arch}) on Ray"
            with progress(len(indices), desc, "img", enabled=progress_bar) as bar:
                for block in blocks:
                    for position, vector, error in zip(
                        block.positions, block.values, block.errors, strict=True
                    ):
                        yield indices[position], (None if error else vector), (error or None)
                    bar.update(len(block.positions))

    return fill_store(store, paths, compute)
