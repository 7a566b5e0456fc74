"""Which engine, and a Ray to run on: the engine check every command makes before any work, the
Ray session a run joins or starts, and how many actors it gets.

Ray is imported here only when the Ray engine runs: the core install works without it.
"""

from __future__ import annotations

import logging
import math
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from postergenre._cpu import available_cores
from postergenre.console import echo
from postergenre.errors import UserError

ENGINES = ("local", "ray")
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
        import_ray()
        if address is not None:
            _check_reachable(address)


def import_ray() -> Any:
    """The `ray` module (with Ray Data), or `RayUnavailable` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayUnavailable("the Ray engine needs Ray: pip install 'postergenre[ray]'") from None
    return ray


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
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
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
        raise RayRunFailed(f"cannot {where}: {ray_error_line(exc)}") from None
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


_ERROR_LINE_PATTERN = re.compile(r"^[\w.]*(Error|Exception)\b.*:")


def ray_error_line(exc: BaseException) -> str:
    """One line for an exception Ray raised: the last `SomeError: message` line of the
    traceback text it carries, else its first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if _ERROR_LINE_PATTERN.match(line)]
    return (named or lines or [type(exc).__name__])[-1 if named else 0]


def quiet_ray_data() -> None:
    """Ray Data logs every execution's plan and progress, that its bars are off, and the
    stack of a failure on stderr: the driver reports all of that itself, in a line each."""
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
