"""The poster's own words: text read by OCR, computed once per poster and cached like pixels.

OCR is `rapidocr-onnxruntime` (the optional `ocr` extra: its detection and recognition models
ship inside the wheel, nothing is downloaded). It reads the same decoded pixels the image model
sees (the model's input size), with the angle classifier off, one ONNX Runtime thread per
worker process, posters spread over `workers` processes. A poster's text is its recognised
lines with confidence >= `MIN_SCORE`, in reading order, joined by " | ". It is stored as UTF-8
in fixed rows of `TEXT_BYTES` bytes (longer text is cut at a character boundary) in an
`ArrayStore`, so it gets the pixel cache's checksums, locking and maintenance.

`TextSpec` turns text into a model's text input: character n-grams within word boundaries,
lower-cased, hashed into a fixed number of buckets (scikit-learn's `HashingVectorizer`, so no
vocabulary is stored), as sublinear term frequencies `1 + log(count)`. A model that reads text
weights them by its stored IDF and L2-normalises them itself (the TF-IDF of its training).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from postergenre._cpu import default_workers
from postergenre.data.cache import Row, default_cache_dir, fill_store, run_jobs
from postergenre.data.preprocess import InputSpec, load_poster_array
from postergenre.data.store import ArrayStore
from postergenre.errors import PosterDecodeError, UserError

OCR_PACKAGE = "rapidocr-onnxruntime"
TEXT_BYTES = 1024
MIN_SCORE = 0.5
SEPARATOR = " | "


DEFAULT_BUCKETS = 1 << 16
DEFAULT_NGRAMS = (2, 4)


class OcrUnavailable(UserError):
    """The OCR extra is not installed."""


def ocr_version() -> str:
    """The installed OCR package's version; refuses with how to install it when missing."""
    try:
        return metadata.version(OCR_PACKAGE)
    except metadata.PackageNotFoundError:
        raise OcrUnavailable(
            "reading poster text needs OCR: pip install 'postergenre[ocr]'"
        ) from None


@lru_cache(maxsize=1)
def _engine() -> Any:
    ocr_version()
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR(
        use_angle_cls=False, intra_op_num_threads=1, inter_op_num_threads=1, print_verbose=False
    )


def read_text(pixels: np.ndarray) -> str:
    """The text OCR finds in one RGB uint8 (H, W, 3) poster ("" when there is none)."""
    result, _ = _engine()(np.ascontiguousarray(pixels[..., ::-1]), use_cls=False)
    lines = [str(text).strip() for _, text, score in (result or []) if float(score) >= MIN_SCORE]
    return SEPARATOR.join(line for line in lines if line)


def read_poster_texts(pixels: Iterable[np.ndarray]) -> list[str]:
    """The text OCR finds in each RGB uint8 (H, W, 3) poster."""
    return [read_text(p) for p in pixels]


def encode_text(text: str) -> np.ndarray:
    """UTF-8 bytes in a zero-padded row of TEXT_BYTES (cut at a character boundary)."""
    raw = text.replace("\0", " ").encode("utf-8")[:TEXT_BYTES]
    raw = raw.decode("utf-8", "ignore").encode("utf-8")
    row = np.zeros(TEXT_BYTES, dtype=np.uint8)
    row[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return row


def decode_text(row: np.ndarray) -> str:
    """The text stored in a row."""
    return bytes(np.asarray(row, dtype=np.uint8)).rstrip(b"\0").decode("utf-8", "ignore")


@dataclass(frozen=True)
class TextSpec:
    """How a model that reads text turns a poster's text into its text input."""

    buckets: int = DEFAULT_BUCKETS
    ngram_min: int = DEFAULT_NGRAMS[0]
    ngram_max: int = DEFAULT_NGRAMS[1]

    def counts(self, texts: Sequence[str]) -> Any:
        """Sparse (B, buckets) float64 sublinear term frequencies (scipy CSR)."""
        from sklearn.feature_extraction.text import HashingVectorizer

        vectorizer = HashingVectorizer(
            analyzer="char_wb",
            ngram_range=(self.ngram_min, self.ngram_max),
            n_features=self.buckets,
            alternate_sign=False,
            norm=None,
            lowercase=True,
        )
        counts = vectorizer.transform([t or "" for t in texts]).tocsr()
        counts.data = 1.0 + np.log(counts.data)
        return counts

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Dense float32 (B, buckets) text input of a model (see `counts`)."""
        return self.counts(texts).toarray().astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "reader": OCR_PACKAGE,
            "features": "hashed character n-grams (char_wb, lower-case), 1 + log(count)",
            "buckets": self.buckets,
            "ngram_range": [self.ngram_min, self.ngram_max],
        }


def _ocr_job(args: tuple[int, str, InputSpec]) -> Row:
    index, path, spec = args
    try:
        pixels = load_poster_array(path, spec)
    except PosterDecodeError as exc:
        return index, None, str(exc)
    return index, encode_text(read_text(pixels)), None


class PosterText:
    """OCR text of posters at an input size, read once and cached on disk."""

    def __init__(self, cache_dir: Path | None, spec: InputSpec):
        self.spec = spec
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        version = ocr_version()
        folder = root / (
            f"text-rapidocr{version}-{spec.width}x{spec.height}-{spec.resize}-{spec.interpolation}"
        )
        self.store = ArrayStore(folder, (TEXT_BYTES,), "uint8")

    def load(
        self, paths: Sequence[Path], workers: int | None = None, progress: bool = True
    ) -> tuple[list[str | None], dict[int, str]]:
        """Each poster's text (None where it could not be read) and the reasons it could not."""
        workers = workers or default_workers()

        def compute(indices: list[int]) -> Iterator[Row]:
            jobs = [(i, str(paths[i]), self.spec) for i in indices]
            yield from run_jobs(_ocr_job, jobs, workers, "reading poster text", progress, 4, 4)

        cached = fill_store(self.store, paths, compute)
        texts: list[str | None] = [None] * len(paths)
        for i in cached.ok:
            texts[int(i)] = decode_text(cached[int(i)])
        return texts, dict(cached.errors)
