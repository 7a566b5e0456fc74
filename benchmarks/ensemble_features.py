"""Pooled features of EfficientNet-Lite0/1/2 for every shared poster, for the pooling study.

Each backbone sees the poster at its own portrait size: the 224x336 input of Lite0, resized
bilinearly inside the network to 240x360 (Lite1) and 260x390 (Lite2), as the ensemble
architecture does. Per backbone it keeps the last feature map's average and max pool, and the
average and max pool of the last block of stages 4, 5 and 6. Written to
runs/ensemble-features.npz (not committed; ~300 MB) for `benchmarks/ensemble_probe.py`.

    python benchmarks/ensemble_features.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import REPO, require_data

from postergenre._allocator import tune_allocator
from postergenre.data.cache import PosterCache
from postergenre.models.efficientnet_lite import PORTRAIT_SIZES, efficientnet_lite, portrait_input

OUT = REPO / "runs" / "ensemble-features.npz"
BATCH = 32


@torch.no_grad()
def features(model, x: torch.Tensor) -> dict[str, np.ndarray]:
    maps = model.stage_maps(x, (4, 5, 6))
    out: dict[str, np.ndarray] = {}
    for name, fmap in zip(("s4", "s5", "s6", "head"), maps, strict=True):
        out[f"{name}_avg"] = fmap.mean(dim=(2, 3)).numpy()
        out[f"{name}_max"] = fmap.amax(dim=(2, 3)).numpy()
    return out


def main() -> None:
    tune_allocator()
    data = require_data()
    paths = sorted((data / "images").glob("*.jpg"))
    spec = portrait_input("lite0")
    pixels = PosterCache(None, spec).load(paths)
    ok = pixels.ok
    models = {v: efficientnet_lite(v, 1000, pretrained=True).eval() for v in PORTRAIT_SIZES}
    chunks: dict[str, list[np.ndarray]] = {}
    started = time.perf_counter()
    for start in range(0, len(ok), BATCH):
        x = spec.normalisation.tensor(pixels[ok[start : start + BATCH]])
        for variant, model in models.items():
            w, h = PORTRAIT_SIZES[variant]
            xi = (
                x
                if (w, h) == (spec.width, spec.height)
                else F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            )
            for key, value in features(model, xi).items():
                chunks.setdefault(f"{variant}/{key}", []).append(value)
        done = min(start + BATCH, len(ok))
        if done % (BATCH * 20) == 0 or done == len(ok):
            rate = done / (time.perf_counter() - started)
            print(f"{done}/{len(ok)} posters, {rate:.1f}/s", flush=True)
    arrays = {k: np.concatenate(v) for k, v in chunks.items()}
    ids = np.array([Path(paths[i]).stem for i in ok])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp.npz")
    np.savez(tmp, ids=ids, **arrays)
    tmp.replace(OUT)
    print(f"wrote {OUT} ({len(ids)} posters, {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
