"""The poster's own words: text read by OCR, computed once per poster and cached like pixels.

OCR is `rapidocr-onnxruntime` (the optional `ocr` extra: its detection and recognition models
ship inside the wheel, nothing is downloaded). It reads the same decoded pixels the image model
sees (the model's input size), with the angle classifier off, one ONNX Runtime thread per
worker process, posters spread over `workers` processes. How hard it looks is an `OcrSetting`
(the detector's input size, how many of the largest text boxes are recognised), recorded on the
card of a model that reads text and part of the text cache's key, so texts read with different
settings never mix. A poster's text is its recognised lines with confidence >= `MIN_SCORE`, in
reading order, joined by " | ". It is stored as UTF-8
in fixed rows of `TEXT_BYTES` bytes (longer text is cut at a character boundary) in an
`ArrayStore`, so it gets the pixel cache's checksums, locking and maintenance.

`TextSpec` turns text into a model's text input: character n-grams within word boundaries,
lower-cased, hashed into a fixed number of buckets (scikit-learn's `HashingVectorizer`, so no
vocabulary is stored), as sublinear term frequencies `1 + log(count)`; a model that reads text
weights them by its stored IDF and L2-normalises them itself (the TF-IDF of its training).
With `sentence`, the all-MiniLM-L6-v2 embedding of the text (`postergenre.data.sentence`, the
`text` extra) follows them in the same row.
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


@dataclass(frozen=True)
class OcrSetting:
    """How OCR reads a poster. The defaults are the first text model's (rapidocr's own: the
    detector sees the poster with its short side scaled to 736 pixels, every box is read)."""

    det_side: int = 736  # the detector's input: the poster's short side scaled to this
    max_boxes: int = 0  # recognise only the largest this many text boxes (0: all)

    def key(self) -> str:
        """The cache folder's suffix: "" for the defaults, so their cached texts stay valid."""
        parts = [f"det{self.det_side}"] if self.det_side != OcrSetting.det_side else []
        parts += [f"top{self.max_boxes}"] if self.max_boxes else []
        return "".join(f"-{p}" for p in parts)

    def to_json(self) -> dict[str, int]:
        return {"det_side": self.det_side, "max_boxes": self.max_boxes}


DEFAULT_OCR = OcrSetting()


@lru_cache(maxsize=4)
def _engine(det_side: int) -> Any:
    ocr_version()
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR(
        use_angle_cls=False,
        intra_op_num_threads=1,
        inter_op_num_threads=1,
        print_verbose=False,
        det_limit_side_len=det_side,
    )


def _box_area(box: np.ndarray) -> float:
    x, y = np.asarray(box, dtype=np.float64).T  # the shoelace formula over the 4 corners
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def read_text(pixels: np.ndarray, ocr: OcrSetting = DEFAULT_OCR) -> str:
    """The text OCR finds in one RGB uint8 (H, W, 3) poster ("" when there is none).

    The same steps as rapidocr's own call (detect, crop, recognise; no angle classifier), so
    that only the largest `ocr.max_boxes` boxes need be recognised: recognition is most of the
    cost, and a poster's large text (title, tagline) says more than its credits."""
    engine = _engine(ocr.det_side)
    image = np.ascontiguousarray(pixels[..., ::-1])  # rapidocr reads BGR, as OpenCV does
    boxes, _ = engine.text_det(image)
    if boxes is None or len(boxes) == 0:
        return ""
    boxes = engine.sorted_boxes(boxes)  # reading order: top to bottom, left to right
    if 0 < ocr.max_boxes < len(boxes):
        largest = set(np.argsort([-_box_area(b) for b in boxes], kind="stable")[: ocr.max_boxes])
        boxes = [b for i, b in enumerate(boxes) if i in largest]
    found, _ = engine.text_rec(engine.get_crop_img_list(image, boxes), False)
    lines = [str(text).strip() for text, score, *_ in found if float(score) >= MIN_SCORE]
    return SEPARATOR.join(line for line in lines if line)


def read_poster_texts(pixels: Iterable[np.ndarray], ocr: OcrSetting = DEFAULT_OCR) -> list[str]:
    """The text OCR finds in each RGB uint8 (H, W, 3) poster."""
    return [read_text(p, ocr) for p in pixels]


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
    """How a model that reads text reads a poster (`ocr`) and turns the text into its text
    input: `buckets` hashed n-gram frequencies (0: none), then with `sentence` the text's
    384-d all-MiniLM-L6-v2 embedding."""

    buckets: int = DEFAULT_BUCKETS
    ngram_min: int = DEFAULT_NGRAMS[0]
    ngram_max: int = DEFAULT_NGRAMS[1]
    ocr: OcrSetting = DEFAULT_OCR
    sentence: bool = False

    @property
    def width(self) -> int:
        """The text input's columns: n-gram buckets, then the sentence embedding."""
        from postergenre.data.sentence import DIM

        return self.buckets + (DIM if self.sentence else 0)

    def counts(self, texts: Sequence[str]) -> Any:
        """Sparse (B, buckets) float64 sublinear term frequencies (scipy CSR)."""
        from scipy.sparse import csr_matrix
        from sklearn.feature_extraction.text import HashingVectorizer

        if self.buckets == 0:
            return csr_matrix((len(texts), 0))
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

    def embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """(B, 384) sentence embeddings, or (B, 0) for a model that reads n-grams alone."""
        if not self.sentence:
            return np.zeros((len(texts), 0), np.float32)
        from postergenre.data.sentence import embed_texts

        return embed_texts(texts)

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Dense float32 (B, width) text input of a model (see `counts`, `embeddings`)."""
        counts = self.counts(texts).toarray().astype(np.float32)
        return np.hstack([counts, self.embeddings(texts)]) if self.sentence else counts

    def check_installed(self) -> None:
        """Refuses now, with how to install it, if what reads the text is missing."""
        ocr_version()
        if self.sentence:
            from postergenre.data.sentence import sentence_model_version

            sentence_model_version()

    def to_json(self) -> dict[str, Any]:
        from postergenre.data.sentence import describe

        return {
            "reader": OCR_PACKAGE,
            "features": "hashed character n-grams (char_wb, lower-case), 1 + log(count)"
            + (", then a sentence embedding" if self.sentence else ""),
            "buckets": self.buckets,
            "ngram_range": [self.ngram_min, self.ngram_max],
            "ocr": self.ocr.to_json(),
            "sentence": describe() if self.sentence else None,
        }


def _ocr_job(args: tuple[int, str, InputSpec, OcrSetting]) -> Row:
    index, path, spec, ocr = args
    try:
        pixels = load_poster_array(path, spec)
    except PosterDecodeError as exc:
        return index, None, str(exc)
    return index, encode_text(read_text(pixels, ocr)), None


def text_cache_folder(root: Path, spec: InputSpec, ocr: OcrSetting) -> Path:
    """Where texts read at `spec`'s size with `ocr` are cached: the OCR package's version, the
    input and the setting are all in the name, so no text is reused under other conditions."""
    size = f"{spec.width}x{spec.height}-{spec.resize}-{spec.interpolation}"
    return root / f"text-rapidocr{ocr_version()}-{size}{ocr.key()}"


class PosterText:
    """OCR text of posters at an input size, read once and cached on disk."""

    def __init__(self, cache_dir: Path | None, spec: InputSpec, ocr: OcrSetting = DEFAULT_OCR):
        self.spec, self.ocr = spec, ocr
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.store = ArrayStore(text_cache_folder(root, spec, ocr), (TEXT_BYTES,), "uint8")

    def load(
        self, paths: Sequence[Path], workers: int | None = None, progress: bool = True
    ) -> tuple[list[str | None], dict[int, str]]:
        """Each poster's text (None where it could not be read) and the reasons it could not."""
        workers = workers or default_workers()

        def compute(indices: list[int]) -> Iterator[Row]:
            jobs = [(i, str(paths[i]), self.spec, self.ocr) for i in indices]
            yield from run_jobs(_ocr_job, jobs, workers, "reading poster text", progress, 4, 4)

        cached = fill_store(self.store, paths, compute)
        texts: list[str | None] = [None] * len(paths)
        for i in cached.ok:
            texts[int(i)] = decode_text(cached[int(i)])
        return texts, dict(cached.errors)
