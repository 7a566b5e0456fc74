"""The server's poster index, built or updated in a background thread while the page is up.

`serve --index DIR POSTERS...` starts listening at once; an `IndexJob` then reads the index
already in DIR (served while it is updated), embeds and scores only new or changed posters
(`build_index`), saves DIR and hands the new index to the server. `IndexStatus` says how far it
is: `/api/info` shows it, `/api/similar` answers 503 with Retry-After until an index is there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postergenre.console import Progress, echo, progress, warn
from postergenre.errors import UserError
from postergenre.inference.similarity import PosterIndex

STATES = ("none", "building", "ready", "failed")


@dataclass
class IndexStatus:
    """Where the server's index stands: `state` (see `STATES`), posters `done` of `total` to
    embed, a `message` for people, and the `size` of the index served (0 while none)."""

    state: str = "none"
    done: int = 0
    total: int = 0
    message: str = ""
    size: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def set(self, **values: Any) -> None:
        """Change several fields at once (a reader never sees half of a change)."""
        with self._lock:
            for name, value in values.items():
                setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "state": self.state,
                "done": self.done,
                "total": self.total,
                "message": self.message,
                "size": self.size,
            }


@dataclass
class IndexJob:
    """Build or update the index folder `out` from `build_options` (what `build_index` takes:
    posters, titles, arch, model ...; `private` for the folder) in a background thread, then
    hand it to `publish`."""

    out: Path
    build_options: dict[str, Any]
    private: bool = False
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self, status: IndexStatus, publish: Callable[[PosterIndex], None]) -> None:
        """Start the thread (once); `publish` receives the previous index, if any, then the
        new one."""
        if self._thread is not None:
            return
        status.set(state="building", message="reading the collection")
        self._thread = threading.Thread(
            target=self._run, args=(status, publish), name="postergenre-index", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (tests; the server never waits for it)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, status: IndexStatus, publish: Callable[[PosterIndex], None]) -> None:
        try:
            index = self._build(status, publish)
        except UserError as exc:
            status.set(state="failed", message=exc.one_line())
            warn(f"the poster index could not be built: {exc.one_line()}")
            return
        except Exception as exc:  # a bug: the page says so; the server goes on serving genres
            status.set(state="failed", message=f"{type(exc).__name__}: {exc}")
            warn(f"the poster index could not be built: {type(exc).__name__}: {exc}")
            return
        publish(index)
        message = f"{len(index):,} posters indexed ({index.changes.describe()})"
        status.set(state="ready", message=message, size=len(index))
        echo(f"similar posters ready: {message} in {self.out}")

    def _build(self, status: IndexStatus, publish: Callable[[PosterIndex], None]) -> PosterIndex:
        from postergenre.inference.index_build import build_index, previous_index

        previous = previous_index(self.out)
        if previous is not None:
            publish(previous)  # served while it is brought up to date
            status.set(size=len(previous))
        bar: Progress | None = None

        def step(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:  # the total is known once the collection is listed
                bar = progress(total, "indexing posters")
            bar.update(done - bar.n)
            status.set(done=done, total=total, message=f"embedding {done:,} of {total:,} posters")

        try:
            index = build_index(
                **self.build_options, previous=previous, progress=False, on_progress=step
            )
        finally:
            if bar is not None:
                bar.close()
        index.save(self.out, private=self.private)
        return index
