"""Which engine, and a Ray to run on: the engine check every command makes before any work, the
Ray session a run joins or starts, and how many actors it gets.

Ray is imported here only when the Ray engine runs: the core install works without it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from postergenre._cpu import available_cores
from postergenre.console import echo
from postergenre.errors import UserError

ENGINES = ("local", "ray")
# Seconds to wait for a cluster's address to answer before giving up (Ray itself retries for
# minutes, logging every few seconds); POSTERGENRE_RAY_CONNECT_TIMEOUT changes it.
CONNECT_TIMEOUT = 10.0
CONNECT_TIMEOUT_VARIABLE = "POSTERGENRE_RAY_CONNECT_TIMEOUT"
# What a gRPC client sends first (HTTP/2's connection preface and an empty SETTINGS frame); a
# Ray head (GCS) or Ray Client server answers with its own SETTINGS frame at once.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_HTTP2_SETTINGS = 0x04


class RayUnavailable(UserError):
    """The Ray extra is not installed."""


class AddressWithoutRay(UserError):
    """A Ray cluster's address was given for the local engine."""

    hint = "--address goes with --engine ray"


class RayRunFailed(UserError):
    """Ray could not be started or joined, or a run on it failed."""


def check_engine(
    engine: str, address: str | None = None, *, connect_timeout: float | None = None
) -> None:
    """Refuse, before any work, an unknown engine, an address without the Ray engine, the Ray
    engine without Ray installed, or an address where no Ray cluster answers within
    `connect_timeout` seconds (see `connect_timeout`)."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if address is not None and engine != "ray":
        raise AddressWithoutRay("an address names a Ray cluster: it goes with the ray engine only")
    if engine == "ray":
        import_ray()
        if address is not None:
            _check_reachable(address, connect_timeout)


def import_ray() -> Any:
    """The `ray` module (with Ray Data), or `RayUnavailable` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayUnavailable("the Ray engine needs Ray: pip install 'postergenre[ray]'") from None
    return ray


def connect_timeout(seconds: float | None = None) -> float:
    """Seconds to wait for a Ray cluster to answer: `seconds` when given, else the environment
    variable POSTERGENRE_RAY_CONNECT_TIMEOUT, else `CONNECT_TIMEOUT`."""
    if seconds is None:
        text = os.environ.get(CONNECT_TIMEOUT_VARIABLE, "").strip()
        try:
            seconds = float(text) if text else CONNECT_TIMEOUT
        except ValueError:
            seconds = math.nan
        what = f"{CONNECT_TIMEOUT_VARIABLE}={text!r:.20}"
    else:
        what = f"a connect timeout of {seconds!r:.20}"
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"{what}: a Ray connect timeout is a number of seconds above 0")
    return seconds


def _bootstrap_address(address: str) -> str:
    """The host:port `ray.init(address)` will connect to: "auto" is looked up as Ray looks it
    up (RAY_ADDRESS, then the latest cluster started here)."""
    if address != "auto":
        return address.removeprefix("ray://")
    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:  # another Ray release: Ray resolves it itself
        return address
    try:
        return get_ray_address_from_environment("auto", None) or address
    except (ConnectionError, ValueError) as exc:
        raise RayRunFailed(f"no Ray cluster for address auto: {ray_error_line(exc)}") from None


def _check_reachable(address: str, timeout: float | None = None) -> None:
    """Fail fast, in one line, unless what listens at `address` (host:port, ray://host:port or
    auto) answers as a Ray cluster does (in HTTP/2, as gRPC servers do) within `timeout`
    seconds (see `connect_timeout`)."""
    timeout = connect_timeout(timeout)
    host, _, port = _bootstrap_address(address).rpartition(":")
    if not host or not port.isdigit():
        return  # forms Ray resolves itself
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
            sock.sendall(_HTTP2_PREFACE)
            answer = b""
            while len(answer) < 9:  # a frame header: 3 bytes length, 1 type, 1 flags, 4 stream
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                block = sock.recv(9 - len(answer))
                if not block:
                    break
                answer += block
    except TimeoutError:
        raise RayRunFailed(
            f"{address} did not answer as a Ray cluster within {timeout:g} s"
        ) from None
    except OSError as exc:
        raise RayRunFailed(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}"
        ) from None
    if len(answer) < 9 or answer[3] != _HTTP2_SETTINGS:
        raise RayRunFailed(f"what answers at {address} is not a Ray cluster")


@contextmanager
def ray_session(
    address: str | None = None, *, connect_timeout: float | None = None
) -> Iterator[None]:
    """Ray for the duration of a run. A Ray this process already started or joined is used as it
    is; otherwise join the cluster at `address` (refused in one line when it does not answer
    within `connect_timeout` seconds), or, without one, start Ray on this machine (every
    available core, no dashboard) and shut it down afterwards."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address is not None:
            _check_reachable(address, connect_timeout)
            ray.init(address=address, **quiet)
            # said once it worked: a failure is reported alone
            echo(f"joined the Ray cluster at {address}")
        else:
            cores = available_cores()
            ray.init(address="local", num_cpus=cores, include_dashboard=False, **quiet)
            echo(f"started Ray on this machine ({cores} cores)")
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
