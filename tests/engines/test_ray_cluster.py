"""Joining a Ray cluster fails fast and in one line when nothing at the address speaks Ray:
a closed port is refused at once, a socket that accepts and says nothing within the connect
timeout (`POSTERGENRE_RAY_CONNECT_TIMEOUT`, small here). Only loopback addresses are used."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from postergenre.cli import main
from postergenre.engines.ray_cluster import RayRunFailed, check_engine, connect_timeout
from postergenre.errors import UserError
from tests.conftest import make_tiny_folder
from tests.models.test_bundle_files import deadline

ray = pytest.importorskip("ray")


@pytest.fixture
def closed_port() -> int:
    """A loopback port where nothing listens (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel does) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_a_closed_port_is_refused_at_once(closed_port, scheme):
    started = time.monotonic()
    with pytest.raises(RayRunFailed, match="cannot reach the Ray cluster"):
        check_engine("ray", f"{scheme}127.0.0.1:{closed_port}")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_a_silent_listener_times_out_within_the_connect_timeout(silent_port, scheme, monkeypatch):
    monkeypatch.setenv("POSTERGENRE_RAY_CONNECT_TIMEOUT", "0.5")
    started = time.monotonic()
    with pytest.raises(RayRunFailed, match=r"did not answer as a Ray cluster within 0\.5 s"):
        check_engine("ray", f"{scheme}127.0.0.1:{silent_port}")
    assert time.monotonic() - started < 2
    with pytest.raises(RayRunFailed, match=r"within 0\.25 s"):
        check_engine("ray", f"127.0.0.1:{silent_port}", connect_timeout=0.25)


def test_auto_finds_the_cluster_named_by_ray_address(silent_port, monkeypatch):
    monkeypatch.setenv("POSTERGENRE_RAY_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{silent_port}")
    with deadline(10), pytest.raises(RayRunFailed, match="did not answer as a Ray cluster"):
        check_engine("ray", "auto")


def test_the_cli_refuses_a_silent_address_in_one_line_within_the_timeout(
    silent_port, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("POSTERGENRE_RAY_CONNECT_TIMEOUT", "1")
    folder = make_tiny_folder(tmp_path / "posters", (1, 0, 0))
    argv = ["predict", str(folder), "--out", str(tmp_path / "p.csv"), "--engine", "ray"]
    started = time.monotonic()
    with deadline(30):
        assert main([*argv, "--address", f"127.0.0.1:{silent_port}"]) == 2
    assert time.monotonic() - started < 10
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("postergenre predict: error: ") and f"127.0.0.1:{silent_port}" in line
    assert not list(tmp_path.glob("p.csv*"))


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_a_bad_connect_timeout_is_refused(value, monkeypatch):
    monkeypatch.setenv("POSTERGENRE_RAY_CONNECT_TIMEOUT", value)
    with pytest.raises(UserError, match="POSTERGENRE_RAY_CONNECT_TIMEOUT"):
        connect_timeout()


def test_the_connect_timeout_defaults_to_ten_seconds(monkeypatch):
    monkeypatch.delenv("POSTERGENRE_RAY_CONNECT_TIMEOUT", raising=False)
    assert connect_timeout() == 10.0 and connect_timeout(2.5) == 2.5
