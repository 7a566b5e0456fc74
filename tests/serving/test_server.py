"""Starting the server: settings out of range are refused in one line before anything starts,
limits are SI megabytes, and a model that cannot load is reported alone, with no warning about
a fallback first."""

from __future__ import annotations

import math
import shutil
from typing import Any, ClassVar

import pytest

from postergenre.console import format_bytes
from postergenre.errors import UserError
from postergenre.inference import Predictor
from postergenre.serving import server
from postergenre.serving.app import create_app

# Each setting `serve()` takes, with values out of its range.
BAD_SETTINGS = [
    ("port", -1),
    ("port", 65_536),
    ("port", 80.5),
    ("max_upload_mb", 0),
    ("max_upload_mb", -10),
    ("max_upload_mb", math.nan),
    ("max_upload_mb", math.inf),
    ("max_batch", 0),
    ("max_batch", -3),
    ("max_batch", 2.5),
    ("max_wait_ms", -1),
    ("max_wait_ms", math.nan),
    ("max_wait_ms", 1e9),
    ("max_files", 0),
    ("max_files", -1),
    ("max_pixels", 0),
    ("max_pixels", -5),
    ("max_pixels", 10**12),
    ("request_timeout", 0),
    ("request_timeout", -1.0),
    ("request_timeout", math.inf),
]


class _NeverRun:
    """Stands in for uvicorn's server: records the app, and returns at once from `run`."""

    apps: ClassVar[list[Any]] = []

    def __init__(self, app: Any, *args: Any, **kwargs: Any):
        self.apps.append(app)

    def run(self, sockets: Any = None) -> None:
        return None


@pytest.fixture
def no_uvicorn(monkeypatch):
    _NeverRun.apps = []
    monkeypatch.setattr(server, "make_server", _NeverRun)
    return _NeverRun


def _refusal(call: Any) -> str:
    with pytest.raises(UserError) as caught:
        call()
    message = caught.value.one_line()
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_serve_refuses_a_setting_out_of_range_before_starting(
    predictor, no_uvicorn, capsys, name, value
):
    message = _refusal(lambda: server.serve(predictor, **{name: value}))
    assert message.startswith(f"{name} must be ") and f"got {value!r}" in message
    assert no_uvicorn.apps == []
    assert capsys.readouterr().out == ""  # nothing announced for a server that never starts


@pytest.mark.parametrize(("name", "value"), [s for s in BAD_SETTINGS if s[0] != "port"])
def test_create_app_refuses_the_same_settings(predictor, name, value):
    if name == "max_upload_mb":
        name, value = "max_upload_bytes", value * 1_000_000 if math.isfinite(value) else value
        expected = "max_upload_mb must be "
    else:
        expected = f"{name} must be "
    assert _refusal(lambda: create_app(predictor, warmup=False, **{name: value})).startswith(
        expected
    )


def test_the_refusal_names_the_allowed_range(predictor, no_uvicorn):
    message = _refusal(lambda: server.serve(predictor, port=70_000))
    assert message == "port must be a whole number from 0 to 65535, got 70000"
    message = _refusal(lambda: server.serve(predictor, max_wait_ms=-1))
    assert message == "max_wait_ms must be a number from 0 to 10000, got -1"
    message = _refusal(lambda: server.serve(predictor, request_timeout=0))
    assert message == "request_timeout must be a number over 0 and at most 3600, got 0"


def test_settings_at_the_ends_of_their_ranges_are_accepted(predictor, no_uvicorn):
    server.serve(predictor, port=0, max_batch=1, max_wait_ms=0, max_files=1, max_pixels=1)
    assert len(no_uvicorn.apps) == 1


def test_the_upload_limit_is_in_si_megabytes(predictor, no_uvicorn, capsys):
    server.serve(predictor, port=0, max_upload_mb=10)
    [app] = no_uvicorn.apps
    assert app.state.server.uploads.max_upload_bytes == 10_000_000
    assert app.state.server.model_info["server"]["max_upload_bytes"] == 10_000_000
    assert "serving model" in capsys.readouterr().out


def test_the_default_limit_is_ten_si_megabytes(predictor):
    app = create_app(predictor, warmup=False)
    assert app.state.server.uploads.max_upload_bytes == 10_000_000
    assert format_bytes(10_000_000) == "10.0 MB"


@pytest.fixture
def damaged_bundle(predictor, tmp_path):
    """A copy of the predictor's bundle whose weights file is a sound safetensors file holding
    the wrong tensors: it passes the file checks at open, and fails when the model loads."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "damaged"
    shutil.copytree(predictor.folder, folder)
    save_file({"unrelated": torch.zeros(3)}, str(folder / "model.safetensors"))
    return folder


def test_a_fallback_that_fails_too_reports_only_the_failure(damaged_bundle, tmp_path, capsys):
    # runtime auto: the ONNX export cannot load the model, nor can the PyTorch fallback.
    damaged = Predictor.from_pretrained(damaged_bundle, runtime="auto", cache_dir=tmp_path)
    message = _refusal(lambda: damaged.onnx_runner)
    assert "damaged" in message
    assert capsys.readouterr().err == ""  # no "predicting with PyTorch instead" first


def test_serve_refuses_a_model_that_cannot_load_before_listening(
    damaged_bundle, tmp_path, no_uvicorn, capsys
):
    damaged = Predictor.from_pretrained(damaged_bundle, runtime="auto", cache_dir=tmp_path)
    message = _refusal(lambda: server.serve(damaged, port=0))
    assert "damaged" in message
    assert no_uvicorn.apps == []
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_connections_to_the_listening_socket_send_small_writes_at_once():
    """asyncio turns Nagle's algorithm off only for sockets whose protocol says TCP: a socket
    made without it held every response ~40 ms for the client's delayed ACK."""
    import asyncio
    import socket

    async def accepted_nodelay() -> int:
        sock = server.bind_socket("127.0.0.1", 0)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            raw = writer.get_extra_info("socket")
            seen.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listener = await asyncio.start_server(on_connect, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            listener.close()
            await listener.wait_closed()

    assert asyncio.run(accepted_nodelay()) == 1
