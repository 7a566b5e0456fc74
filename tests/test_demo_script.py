"""`make demo` (scripts/demo.sh) with a stub CLI: no real server, no real model.

The stub records each call's arguments (one line per call, tab-separated) and exits 0, so the
script's control flow can be checked quickly and many times over. Also checks that the Makefile
tunes glibc's allocator exactly as `postergenre._allocator` does.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from postergenre._allocator import _SETTINGS
from tests.conftest import REPO

DEMO = REPO / "scripts" / "demo.sh"
MAKEFILE = REPO / "Makefile"
HINT = "choose another port: make demo PORT=8001"
# Records "arg<TAB>arg<TAB>...<TAB>" per call; `serve` exits with $STUB_SERVE_RC (default 0)
# or, with $STUB_SERVE_SLEEP set, waits that long (to be interrupted).
STUB = """#!/usr/bin/env bash
printf '%s\\t' "$@" >> "$STUB_LOG"
printf '\\n' >> "$STUB_LOG"
if [ "${1:-}" = serve ]; then
  if [ -n "${STUB_SERVE_SLEEP:-}" ]; then exec sleep "$STUB_SERVE_SLEEP"; fi
  if [ "${STUB_SERVE_RC:-0}" != 0 ]; then
    echo "postergenre serve: error: port busy; pass --port" >&2
  fi
  exit "${STUB_SERVE_RC:-0}"
fi
exit 0
"""

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture
def stub(tmp_path: Path) -> Path:
    """An executable stand-in for the postergenre console script."""
    path = tmp_path / "bin" / "postergenre"
    path.parent.mkdir()
    path.write_text(STUB)
    path.chmod(0o755)
    return path


def _env(stub: Path, log: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "HOST")}
    env.update(PG=str(stub), STUB_LOG=str(log), **extra)
    return env


def _calls(log: Path) -> list[list[str]]:
    """Each recorded call as its argument list."""
    if not log.is_file():
        return []
    return [line.split("\t")[:-1] for line in log.read_text().splitlines()]


def _run_demo(
    data: Path, stub: Path, workdir: Path, **extra: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run demo.sh in WORKDIR (so its runs/demo-index is a fresh one) with the stub CLI."""
    log = workdir / f"calls-{time.monotonic_ns()}.log"
    done = subprocess.run(
        ["bash", str(DEMO), str(data)],
        cwd=workdir,
        env=_env(stub, log, **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, _calls(log)


def _serve_args(calls: list[list[str]]) -> list[str]:
    [serve] = [c for c in calls if c and c[0] == "serve"]
    return serve


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


# -- the demo script --------------------------------------------------------------------------
@needs_bash
def test_demo_with_shared_data_never_aborts(shared_data: Path, stub: Path, tmp_path: Path):
    """The poster list never dies of SIGPIPE (it did in 2 of 6 runs under `set -o pipefail`)."""
    for attempt in range(10):
        done, calls = _run_demo(shared_data, stub, tmp_path)
        assert done.returncode == 0, f"run {attempt}: exit {done.returncode}\n{done.stderr}"
        commands = [c[0] for c in calls]
        assert commands == ["models", "predict", "serve"], commands  # indexed while serving
        [predict] = [c for c in calls if c[0] == "predict"]
        posters = predict[1:]
        assert len(posters) == 3, predict
        assert all(Path(p).is_file() for p in posters), posters
        serve = _serve_args(calls)
        assert _option(serve, "--index") == "runs/demo-index"
        assert Path(_option(serve, "--labels")) == shared_data / "train.csv"
        assert Path(_option(serve, "--splits")) == shared_data / "splits.csv"
        assert _option(serve, "--split") == "train"
        assert _option(serve, "--port") == "8000"
        assert "--runtime" not in serve  # the default runtime is the one to show
        assert "--collection" in serve  # the indexed posters are reviewed at /collection


@needs_bash
def test_demo_without_data_still_serves(stub: Path, tmp_path: Path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    done, calls = _run_demo(empty, stub, tmp_path)
    assert done.returncode == 0, done.stderr
    assert [c[0] for c in calls] == ["models", "serve"]
    assert "was not found" in done.stdout
    serve = _serve_args(calls)
    assert _option(serve, "--port") == "8000"
    assert "--index" not in serve and "--runtime" not in serve and "--host" not in serve


@needs_bash
def test_demo_serves_on_port_and_host_from_environment(stub: Path, tmp_path: Path):
    done, calls = _run_demo(tmp_path / "absent", stub, tmp_path, PORT="8001", HOST="0.0.0.0")
    assert done.returncode == 0, done.stderr
    serve = _serve_args(calls)
    assert _option(serve, "--port") == "8001"
    assert _option(serve, "--host") == "0.0.0.0"


@needs_bash
def test_failed_serve_suggests_another_port(stub: Path, tmp_path: Path):
    done, _ = _run_demo(tmp_path / "absent", stub, tmp_path, STUB_SERVE_RC="2")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(HINT), done.stderr


@needs_bash
@pytest.mark.parametrize("rc", [0, 130])
def test_stopped_serve_gives_no_port_hint(stub: Path, tmp_path: Path, rc: int):
    """A normal stop, or Ctrl+C handled by the server (exit 130), is not a busy port."""
    done, _ = _run_demo(tmp_path / "absent", stub, tmp_path, STUB_SERVE_RC=str(rc))
    assert done.returncode == rc
    assert HINT not in done.stderr


def _group_runs(pgid: int, command: str) -> bool:
    """Whether a process of process group `pgid` runs `command` (read from /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        if name == command and int(fields[2]) == pgid:
            return True
    return False


@needs_bash
def test_ctrl_c_stops_the_demo(stub: Path, tmp_path: Path):
    """SIGINT to the foreground process group (what Ctrl+C does) ends serve and the script."""
    log = tmp_path / "calls.log"
    process = subprocess.Popen(
        ["bash", str(DEMO), str(tmp_path / "absent")],
        cwd=tmp_path,
        env=_env(stub, log, STUB_SERVE_SLEEP="60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(c[:1] == ["serve"] for c in _calls(log)):
            assert time.monotonic() < deadline, "serve never started"
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        # Ctrl+C once serve runs: wait until the stub has exec'd its sleep (on a loaded machine
        # 0.2 s was not always enough, and a signal before the exec is lost with it)
        while not _group_runs(process.pid, "sleep"):
            assert time.monotonic() < deadline, "the stub never started sleeping"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode in (-signal.SIGINT, 128 + signal.SIGINT)
    assert HINT not in stderr


# -- the Makefile -----------------------------------------------------------------------------
@needs_bash
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize(
    ("how", "expected"),
    [("default", "8000"), ("argument", "8001"), ("environment", "8001")],
)
def test_make_demo_passes_the_port(stub: Path, tmp_path: Path, how: str, expected: str):
    """`make demo PORT=8001` and `PORT=8001 make demo` serve on 8001 (install skipped: -o)."""
    log = tmp_path / "calls.log"
    empty = tmp_path / "no-data"
    empty.mkdir()
    argv = ["make", "-s", "-o", "install", "demo", f"DATA={empty}"]
    env = _env(stub, log)
    if how == "argument":
        argv.append("PORT=8001")
    elif how == "environment":
        env["PORT"] = "8001"
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    serve = _serve_args(_calls(log))
    assert _option(serve, "--port") == expected
    assert "--host" not in serve


def _makefile_exports() -> dict[str, int]:
    pattern = re.compile(r"^export\s+(MALLOC_\w+)\s*:?=\s*(\d+)\s*$")
    found = {}
    for line in MAKEFILE.read_text().splitlines():
        match = pattern.match(line)
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def test_makefile_tunes_the_allocator_like_the_package():
    """The env vars `make` exports equal what `_allocator` sets through mallopt (an int)."""
    expected = {name: value for name, (_, value) in _SETTINGS.items()}
    assert _makefile_exports() == expected
    assert all(0 < value <= 2**31 - 1 for value in expected.values())
