"""A bundle's two files are read within bounds: regular files only, a card of bounded size, and
weights whose header is checked against the card (names, dtypes, shapes, size) before the data
is read. A FIFO, a device, a folder or a huge file is refused in one line, never waited on."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from postergenre.cli import main
from postergenre.inference import Predictor
from postergenre.models.bundle import load_bundle
from postergenre.models.card import CardError, ModelCard
from postergenre.models.catalog import resolve_model
from tests.conftest import make_poster, make_seed_bundle

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero: POSIX")


class Expired(BaseException):
    """Not an OSError nor an Exception: no handler under test can mistake it for a refusal."""


@contextlib.contextmanager
def deadline(seconds: int = 10) -> Iterator[None]:
    """Fail (instead of hanging the suite) when a read blocks or never ends (POSIX only)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise Expired(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_seed_bundle(tmp_path / "seed")


def _replace(path: Path, kind: str) -> None:
    """Turn `path` into something that is not a regular file of sane size."""
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "/dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    elif kind == "huge":
        with open(path, "wb") as handle:  # sparse: 64 GB of nothing, no disk used
            handle.truncate(64 * 1024**3)


FILE_KINDS = ["fifo", "/dev/zero", "folder", "huge"]


@pytest.mark.parametrize("kind", FILE_KINDS)
@pytest.mark.parametrize("name", ["model.json", "model.safetensors"])
def test_a_bundle_file_that_is_not_a_regular_file_is_refused_quickly(bundle, name, kind):
    _replace(bundle / name, kind)
    with deadline(), pytest.raises(CardError) as caught:
        load_bundle(resolve_model(bundle))
    message = str(caught.value)
    assert name in message and "\n" not in message
    expected = "too large" if kind == "huge" else "not a regular file"
    assert expected in message


@pytest.mark.parametrize("kind", FILE_KINDS)
@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_predict_refuses_weights_that_are_not_a_regular_file(bundle, kind, runtime, tmp_path,
                                                             capsys):  # fmt: skip
    _replace(bundle / "model.safetensors", kind)
    poster = make_poster(tmp_path / "p.png", (120, 120, 120))
    with deadline():
        code = main(["predict", str(poster), "--model", str(bundle), "--runtime", runtime])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    [line] = captured.err.strip().splitlines()
    assert line.startswith("postergenre predict: error: ") and "model.safetensors" in line


def test_a_card_larger_than_any_model_needs_is_refused_unread(bundle):
    card = bundle / "model.json"
    data = json.loads(card.read_text())
    data["description"] = "x" * (8 * 1024 * 1024)  # valid JSON, but no card is this big
    card.write_text(json.dumps(data))
    with pytest.raises(CardError, match=r"model\.json.*too large"):
        ModelCard.read(bundle)


def _write_raw(path: Path, header: bytes, data: bytes = b"", length: int | None = None) -> None:
    size = len(header) if length is None else length
    path.write_bytes(struct.pack("<Q", size) + header + data)


@pytest.mark.parametrize(
    "header, length, expected",
    [
        (b"{}", 1 << 60, "header"),  # a header length no file here comes near
        (b"not json", None, "header"),
        (b'{"classifier.bias": [1, 2]}', None, "classifier.bias"),
        (b'{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}', None, "x"),
        (b'{"x": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}', None, "dtype"),
    ],
)
def test_a_malformed_safetensors_header_is_refused(bundle, header, length, expected):
    _write_raw(bundle / "model.safetensors", header, b"\0" * 8, length)
    with deadline(), pytest.raises(CardError, match=expected):
        load_bundle(bundle)


def test_weights_with_bytes_beyond_their_header_are_refused_before_reading(bundle):
    with open(bundle / "model.safetensors", "ab") as handle:
        handle.write(b"\0" * 1000)
    with pytest.raises(CardError, match="1000 bytes"):
        load_bundle(bundle)


def _tamper(folder: Path, change) -> Path:
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))
    return folder


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda t: t.update({"classifier.weight": (t["classifier.weight"] * 100).long()}),
         "tensor classifier.weight is int64, .* needs float32"),
        (lambda t: t.update({"classifier.bias": t["classifier.bias"].half()}),
         "tensor classifier.bias is float16"),
        (lambda t: t.update({"features.0.weight": t["features.0.weight"].double()}),
         "tensor features.0.weight is float64"),
        (lambda t: t["classifier.weight"].fill_(1e38), "classifier.weight holds values beyond"),
        (lambda t: t["features.0.bias"].fill_(-3e6), "features.0.bias holds values beyond"),
        (lambda t: t.update({"classifier.bias": torch.zeros(3, 1)}),
         r"classifier.bias has shape \(3, 1\)"),
    ],
)  # fmt: skip
def test_every_tensor_has_the_dtype_shape_and_range_of_the_cards_model(bundle, change, expected):
    with pytest.raises(CardError, match=expected):
        load_bundle(_tamper(bundle, change))


def test_a_model_that_saturates_on_a_grey_poster_is_refused_at_load(bundle):
    # Within the value bound, but every probability is exactly 0 or 1 whatever the poster.
    _tamper(bundle, lambda t: t["classifier.bias"].copy_(torch.tensor([9e4, 0.0, 0.0])))
    with pytest.raises(CardError, match="grey test poster"):
        load_bundle(bundle)


def test_the_probe_does_not_refuse_a_sound_model(bundle):
    loaded = load_bundle(bundle)  # an untrained seed-cnn: near-uniform, but not saturated
    assert not loaded.model.training


def test_the_library_refuses_int64_weights_too(bundle):
    _tamper(bundle, lambda t: t.update({"classifier.weight": t["classifier.weight"].long()}))
    predictor = Predictor.from_pretrained(bundle, runtime="torch")
    with pytest.raises(CardError, match="int64"):
        predictor.predict(make_poster(bundle.parent / "p.png", (1, 2, 3)))
