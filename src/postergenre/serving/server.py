"""Run the web app with uvicorn: `serve(Predictor.from_pretrained("imdb-20"))`."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

from postergenre._allocator import tune_allocator
from postergenre.curation.collection import Collection
from postergenre.errors import UserError
from postergenre.inference.predictor import Predictor
from postergenre.inference.similarity import PosterIndex
from postergenre.serving.app import build_app
from postergenre.serving.index_job import IndexJob
from postergenre.serving.limits import (
    MAX_FILES,
    REQUEST_TIMEOUT_S,
    SERVER_MAX_PIXELS,
    GuardedH11Protocol,
)
from postergenre.serving.model_threads import warm_up
from postergenre.serving.settings import ServerSettings


class PortInUse(UserError):
    """The address cannot be listened on (taken by another server, or not this machine's)."""

    hint = "choose another with --port (make demo PORT=N)"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP,
    # and without it every response waited ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_for(host: str, port: int) -> str:
    """The address to open in a browser for a server bound to `host`."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def make_server(
    app: Any, request_timeout: float = REQUEST_TIMEOUT_S, log_level: str = "warning"
) -> Any:
    """A uvicorn server for `app` whose connections must send their request headers within
    `request_timeout` seconds, and whose protocol errors are answered in JSON."""
    import uvicorn

    protocol = type("Protocol", (GuardedH11Protocol,), {"request_timeout": request_timeout})
    config = uvicorn.Config(
        app,
        http=protocol,
        log_level=log_level,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    return uvicorn.Server(config)


def serve(
    predictor: Predictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    index: PosterIndex | None = None,
    max_upload_mb: float = 10,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    max_files: int = MAX_FILES,
    max_pixels: int = SERVER_MAX_PIXELS,
    request_timeout: float = REQUEST_TIMEOUT_S,
    log_level: str = "warning",
    index_job: IndexJob | None = None,
    collection: Collection | None = None,
    collection_folder: Path | None = None,
) -> None:
    """Serve the page and API until interrupted (Ctrl+C); prints the URL to open first.
    `index_job` builds or updates an index in the background once the server listens;
    `collection` (its index is then `index`) is looked through and corrected at /collection;
    `collection_folder`: the index folder `index_job` builds, opened as the collection when ready.

    `max_upload_mb` is in SI megabytes (10: 10,000,000 bytes). A setting out of range
    (`SettingError`) or a model that cannot load is refused before anything listens."""
    settings = ServerSettings(
        port=port,
        max_upload_mb=max_upload_mb,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_files=max_files,
        max_pixels=max_pixels,
        request_timeout=request_timeout,
    ).check()
    tune_allocator()
    # Load and run the models now: a failure is one line, not a failed start-up under uvicorn.
    index = collection.index if collection is not None else index
    warm_up(predictor, index)
    app = build_app(
        predictor,
        settings,
        index,
        warmup=False,
        index_job=index_job,
        collection=collection,
        collection_folder=collection_folder,
    )
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    server = make_server(app, settings.request_timeout, log_level)
    details = f"{len(predictor.genres)} genres, {predictor.task}-label"
    if index is not None:
        details += f"; {len(index)} posters indexed for similar posters"
    elif index_job is not None:
        details += f"; similar posters once {index_job.out} is built or updated (in the background)"
    print(f"serving model {predictor.name} ({details})", flush=True)
    print(f"open {url_for(host, bound_port)} in a browser (Ctrl+C to stop)", flush=True)
    if collection_folder is not None:
        print(
            f"collection at {url_for(host, bound_port)}collection once {collection_folder} "
            "is built (in the background)",
            flush=True,
        )
    if collection is not None:
        where = f"corrections go to {collection.corrections.path}"
        if not collection.corrections.writable:
            where = f"{collection.folder} is read-only: browse only, corrections cannot be saved"
        print(
            f"collection of {len(collection)} posters at {url_for(host, bound_port)}collection; "
            f"{where}",
            flush=True,
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            "warning: listening beyond this machine; anyone who can reach it can upload posters",
            file=sys.stderr,
            flush=True,
        )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises Ctrl+C once it has shut down gracefully
    finally:
        sock.close()
    print("server stopped", flush=True)
