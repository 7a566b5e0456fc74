"""Reading a bundle's two files within bounds, before anything trusts them.

Only regular files are opened (a FIFO would block, /dev/zero never ends, a folder is no file),
and each is opened once: the checks are made on the open file, so it cannot be swapped in
between. The card is bounded in size; the weights' safetensors header is read first (8-byte
length, then the JSON header), its tensors are laid out and summed, and the file must be
exactly that size; the caller checks the tensors against the card before the data is read.

Cheap to import (no torch): cards are read on the fast path too.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from postergenre.console import format_bytes
from postergenre.models.card_fields import CardError

# safetensors dtype -> (the name people know, bytes per element)
DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2),
    "BF16": ("bfloat16", 2), "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2),
    "I8": ("int8", 1), "U64": ("uint64", 8), "U32": ("uint32", 4), "U16": ("uint16", 2),
    "U8": ("uint8", 1), "BOOL": ("bool", 1),
}  # fmt: skip
# Lite2's whole network holds about 500 tensors (a 60 kB header): 4 MB is far beyond any.
MAX_HEADER_BYTES = 4 * 1024 * 1024
# The largest bundle a network here writes is a fine-tuned Lite2 (about 25 MB); a k-NN memory
# of its most posters (MAX_KNN_ROWS in bundle.py) about 0.7 GB. Nothing larger is read.
MAX_WEIGHTS_BYTES = 1024 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as a safetensors header describes it."""

    dtype: str  # the safetensors code: F32, I64, ...
    shape: tuple[int, ...]

    @property
    def dtype_name(self) -> str:
        return DTYPES[self.dtype][0]


def _open_regular(path: Path, max_bytes: int) -> tuple[BinaryIO, int]:
    """Open `path` for reading if it is a regular file of at most `max_bytes`: (file, size)."""
    try:
        # O_NONBLOCK: opening a FIFO returns at once (and is then refused) instead of waiting.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise CardError(f"{path} is missing") from None
    except OSError as exc:
        raise CardError(f"cannot read {path}: {exc.strerror or exc}") from exc
    info = os.fstat(fd)  # of what was opened: it cannot be swapped after this check
    problem = ""
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO, device or socket"
        problem = f"is not a regular file ({kind})"
    elif info.st_size > max_bytes:
        problem = f"is too large ({format_bytes(info.st_size)}; at most {format_bytes(max_bytes)})"
    if problem:
        os.close(fd)
        raise CardError(f"{path} {problem}")
    return os.fdopen(fd, "rb"), info.st_size


def _read_exactly(handle: BinaryIO, n: int, path: Path) -> bytes:
    data = handle.read(n)
    if len(data) != n:  # it shrank while being read
        raise CardError(f"{path} ended early: {len(data)} of {n} bytes")
    return data


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (else a one-line CardError)."""
    handle, size = _open_regular(path, max_bytes)
    with handle:
        return _read_exactly(handle, size, path)


def _entry(name: str, value: object, path: Path) -> tuple[TensorEntry, int, int]:
    """A header entry -> (tensor, start, end), refusing anything malformed."""
    if not isinstance(value, dict):
        raise CardError(f"{path}: the header entry of tensor {name} is not an object")
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if dtype not in DTYPES:
        raise CardError(f"{path}: tensor {name} has an unknown dtype {dtype!r:.40}")
    ints = (shape, offsets)
    if (
        not all(isinstance(v, list) and all(type(i) is int and i >= 0 for i in v) for v in ints)
        or len(offsets) != 2
    ):  # type: ignore[arg-type]
        raise CardError(f"{path}: tensor {name} has a malformed shape or data offsets")
    numel = 1
    for n in shape:  # type: ignore[union-attr]
        numel *= n
    start, end = offsets  # type: ignore[misc]
    if end - start != numel * DTYPES[dtype][1]:
        raise CardError(f"{path}: tensor {name}'s data offsets do not fit its shape")
    return TensorEntry(dtype, tuple(shape)), start, end  # type: ignore[arg-type]


def _read_header(handle: BinaryIO, size: int, path: Path) -> dict[str, TensorEntry]:
    """The tensors of a safetensors file, whose size must be exactly what the header lays
    out (tensors back to back from the data's start)."""
    if size < 8:
        raise CardError(f"{path} is not a safetensors file (only {size} bytes)")
    (length,) = struct.unpack("<Q", _read_exactly(handle, 8, path))
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise CardError(f"{path}: a safetensors header of {length} bytes is not credible")
    try:
        header = json.loads(_read_exactly(handle, length, path))
    except (ValueError, RecursionError) as exc:
        raise CardError(f"{path}: the safetensors header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise CardError(f"{path}: the safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    entries, spans = {}, []
    for name, value in header.items():
        entries[name], start, end = _entry(name, value, path)
        spans.append((start, end))
    expected = 0
    for start, end in sorted(spans):
        if start != expected:
            raise CardError(f"{path}: the tensors' data overlap or leave gaps")
        expected = end
    extra = size - (8 + length + expected)
    if extra:
        problem = f"{extra} bytes beyond" if extra > 0 else f"{-extra} bytes short of"
        raise CardError(f"{path} is {problem} what its header lays out")
    return entries


def read_safetensors(path: Path, check: Callable[[dict[str, TensorEntry]], None]) -> bytes:
    """The whole safetensors file at `path`, read only after `check(header tensors)` accepted
    what the header declares (names, dtypes, shapes), and so the file's size."""
    handle, size = _open_regular(path, MAX_WEIGHTS_BYTES)
    with handle:
        check(_read_header(handle, size, path))
        handle.seek(0)
        return _read_exactly(handle, size, path)


def check_safetensors(path: Path) -> None:
    """Refuse weights that are not a regular safetensors file exactly as large as its header
    lays out (reads the header only; `read_safetensors` checks the tensors against a card)."""
    handle, size = _open_regular(path, MAX_WEIGHTS_BYTES)
    with handle:
        _read_header(handle, size, path)


def bundle_digest(folder: Path) -> str:
    """The SHA-256 (hex) of a bundle's card and weights bytes, read as regular files only and
    within their bounds: what an exported graph and a predictions journal record they came from.
    Hashing streams (1 MB at a time), so memory stays flat whatever the weights' size."""
    # card.py imports this module: its names are imported here, when the function runs.
    from postergenre.models.card import CARD_FILE, MAX_CARD_BYTES, WEIGHTS_FILE

    digest = hashlib.sha256()
    for name, max_bytes in ((CARD_FILE, MAX_CARD_BYTES), (WEIGHTS_FILE, MAX_WEIGHTS_BYTES)):
        path = folder / name
        handle, size = _open_regular(path, max_bytes)
        with handle:
            digest.update(f"{name}:{size}\n".encode())
            read = 0
            for block in iter(lambda: handle.read(1 << 20), b""):  # noqa: B023 (used at once)
                digest.update(block)
                read += len(block)
        if read != size:  # it changed while being read
            raise CardError(f"{path} changed while being read")
    return digest.hexdigest()
