"""Frozen-backbone embeddings, computed once per poster and cached on disk like the pixels.

Linear probes, k-NN and the similar-poster index all read these; none of them re-runs the
backbone for a poster it has seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from postergenre import console
from postergenre.data.cache import CachedArrays, PosterCache, cache_root, fill_store
from postergenre.data.preprocess import InputSpec
from postergenre.data.store import ArrayStore
from postergenre.models._registry import create_model, get_arch

EMBED_BATCH = 32


@lru_cache(maxsize=3)
def frozen_backbone(arch: str) -> torch.nn.Module:
    """The ImageNet-pretrained network of `arch`, in eval mode, shared within a process."""
    model = create_model(arch, 1000, pretrained=True)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


@torch.no_grad()
def embed_pixels(
    arch: str,
    pixels: np.ndarray,
    spec: InputSpec | None = None,
    network: torch.nn.Module | None = None,
) -> np.ndarray:
    """uint8 (B, H, W, 3) at the arch's input size -> float32 (B, D) pooled embeddings, of the
    frozen ImageNet backbone or of `network` (e.g. an adapted model, in eval mode)."""
    spec = spec or get_arch(arch).input
    backbone = network if network is not None else frozen_backbone(arch)
    out = [
        backbone.embed(spec.normalisation.tensor(pixels[i : i + EMBED_BATCH])).numpy()
        for i in range(0, len(pixels), EMBED_BATCH)
    ]
    return np.concatenate(out) if out else np.zeros((0, backbone.num_features), np.float32)


def network_digest(network: torch.nn.Module) -> str:
    """A tuned network's identity for the embedding cache: a hash of every tensor but the
    classifier's (retraining a head keeps the features, and so their cache)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        if not name.startswith("classifier."):
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def embedding_store(
    arch: str, cache_dir: Path | None, network: torch.nn.Module | None = None
) -> ArrayStore:
    """The on-disk store of `arch`'s embeddings (one folder per architecture and input), or of
    a tuned `network`'s (one folder per network: `network_digest`)."""
    spec = get_arch(arch).input
    tuned = f"-tuned-{network_digest(network)}" if network is not None else ""
    name = f"embeddings-{arch}{tuned}-{spec.width}x{spec.height}-{spec.resize}"
    features = (network or frozen_backbone(arch)).num_features
    return ArrayStore(cache_root(cache_dir) / name, (int(features),), "float32")


def compute_embeddings(
    arch: str,
    paths: Sequence[Path],
    cache_dir: Path | None = None,
    progress: bool = True,
    network: torch.nn.Module | None = None,
) -> CachedArrays:
    """Embeddings for `paths` (decoding and embedding only posters not cached yet): of the
    frozen ImageNet backbone, or of `network` (a tuned model of `arch`, e.g. an adapted one),
    each cached in its own store."""
    spec = get_arch(arch).input
    store = embedding_store(arch, cache_dir, network)

    def compute(indices: list[int]) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        if not indices:
            return
        pixels, failed = PosterCache(cache_dir, spec).load_some(paths, indices, progress)
        yield from failed
        ok = pixels.ok
        with console.progress(len(ok), f"embedding ({arch})", "img", enabled=progress) as bar:
            for start in range(0, len(ok), EMBED_BATCH):
                chunk = ok[start : start + EMBED_BATCH]
                vectors = embed_pixels(arch, pixels[chunk], spec, network)
                for j, vector in zip(chunk, vectors, strict=True):
                    yield indices[j], vector, None
                bar.update(len(chunk))

    return fill_store(store, paths, compute)
