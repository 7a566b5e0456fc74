"""Adapting the top stages of a Lite backbone on cached early-stage maps, against its probe.

For each cut point (the first tuned stage), the frozen stages run once per poster and view
(train: the poster plus `views - 1` augmented views; val and test: the poster) and their maps
are kept in `--maps` (float16, memory-mapped; reused by later runs). The linear probe on the
frozen features is fitted once per cut (C on val); then, for each learning rate, a fresh
ImageNet model is adapted from that probe for `--epochs` epochs and the epoch best on val kept.
Reported: val score per epoch, seconds per epoch, the maps' size, and test mAP (20 genres) or
accuracy and balanced accuracy (three genres) with the paired bootstrap interval of the gain
over the probe on the same test posters (1,000 resamples). Only val decides.

    python benchmarks/adapt_backbone.py --arch efficientnet-lite0 --task imdb-20 \\
        --cuts 5,6 --views 2 --epochs 4 --lrs 1e-4,3e-4 [--maps runs/adapt-maps]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _common import REPO, print_table, require_data, write_result
from ensemble_probe import paired_bootstrap

from postergenre._allocator import tune_allocator
from postergenre.data.benchmark import task_sources
from postergenre.data.cache import PosterCache
from postergenre.data.labels import load_posters
from postergenre.data.targets import encode_targets
from postergenre.evaluation.metrics import mean_average_precision
from postergenre.models import create_model, get_arch
from postergenre.models.adapted import parts_of
from postergenre.models.card import to_probabilities
from postergenre.training.adapt import (
    AdaptSettings,
    adapt,
    adapt_members,
    cache_maps,
    features,
    maps_key,
    probe_head,
)


def test_scores(task: str, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    if task == "multi":
        return {"test_map": mean_average_precision(y, probs)}
    pred = probs.argmax(1)
    recalls = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
    return {"test_acc": float((pred == y).mean()), "test_bacc": float(np.mean(recalls))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="efficientnet-lite0")
    parser.add_argument("--task", default="imdb-20", choices=("imdb-20", "three-genre"))
    parser.add_argument("--cuts", default="5,6")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lrs", default="1e-4,3e-4")
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument(
        "--members",
        action="store_true",
        help="ensembles: adapt backbone by backbone, then refit the head",
    )
    parser.add_argument("--maps", default=str(REPO / "runs" / "adapt-maps"))
    parser.add_argument("--name", default=None)
    parser.add_argument("--limit", type=int, default=None, help="posters per split (smoke runs)")
    args = parser.parse_args()
    tune_allocator()
    started = time.perf_counter()
    spec = get_arch(args.arch)
    sources = task_sources(args.task, require_data())
    task, genres = sources["task"], sources["genres"]
    collection = load_posters(**{k: sources[k] for k in ("labels", "images", "splits")})
    data, records = {}, {}
    for split in ("train", "val", "test"):
        targets = encode_targets(collection.split(split).records, genres, task)
        if args.limit:
            targets.records, targets.y = targets.records[: args.limit], targets.y[: args.limit]
        pixels = PosterCache(None, spec.input).load([r.path for r in targets.records])
        assert not pixels.errors, pixels.errors
        data[split], records[split] = (pixels, targets.y), targets.records
    rows, epochs = [], []
    for cut in (int(c) for c in args.cuts.split(",")):
        model = create_model(args.arch, len(genres), pretrained=True)
        parts = parts_of(model, cut)
        maps, seconds = {}, {}
        for split, (pixels, y) in data.items():
            views = args.views if split == "train" else 1
            # The layout and key `train --mode adapt --maps DIR` reuses.
            folder = Path(args.maps) / f"{args.arch}-{args.task}-cut{cut}-views{args.views}" / split
            settings = AdaptSettings(cut=cut, views=args.views)
            key = maps_key(spec.name, settings, [r.path for r in records[split]], views)
            t0 = time.perf_counter()
            maps[split] = cache_maps(
                model, parts, lambda idx, p=pixels: p[idx], len(y), views,
                spec.input.normalisation, folder, 0, split, key=key,
            )  # fmt: skip
            seconds[split] = time.perf_counter() - t0
        size = sum(m.nbytes for m in maps["train"])
        probe = probe_head(model, parts, maps["train"], data["train"][1], maps["val"],
                           data["val"][1], task, len(genres))  # fmt: skip
        with torch.no_grad():
            probe_test = (torch.from_numpy(features(model, parts, maps["test"])) @ probe[0].T
                          + probe[1]).numpy()  # fmt: skip
        probe_probs = to_probabilities(probe_test, task)
        y_test = data["test"][1]
        rows.append({"arch": args.arch, "cut": cut, "lr": "probe", "best_epoch": 0,
                     "val": round(probe[2]["val_score"], 4),
                     **test_scores(task, y_test, probe_probs)})  # fmt: skip
        for lr in (float(v) for v in args.lrs.split(",")):
            model = create_model(args.arch, len(genres), pretrained=True)
            parts = parts_of(model, cut)
            settings = AdaptSettings(cut=cut, views=args.views, epochs=args.epochs, lr=lr,
                                     head_lr=args.head_lr)  # fmt: skip
            if args.members:
                _, info = adapt_members(model, parts, maps["train"], data["train"][1],
                                        maps["val"], data["val"][1], task, settings,
                                        len(genres))  # fmt: skip
                info["history"], info["best_epoch"] = [], "members"
            else:
                _, info = adapt(model, parts, maps["train"], data["train"][1],
                                maps["val"], data["val"][1], task, settings, len(genres),
                                probe=probe)  # fmt: skip
            with torch.no_grad():
                logits = model.classifier(torch.from_numpy(features(model, parts, maps["test"])))
            probs = to_probabilities(logits.numpy(), task)
            kind = "three" if task == "single" else "imdb20"
            low, high = paired_bootstrap(kind, y_test, probs, probe_probs)
            per_epoch = [h["seconds"] for h in info["history"] if "seconds" in h] or [0.0]
            rows.append({"arch": args.arch, "cut": cut, "lr": f"{lr:g}",
                         "best_epoch": info["best_epoch"], "val": info["val_score"],
                         **test_scores(task, y_test, probs),
                         "gain_vs_probe_95": [round(low, 4), round(high, 4)],
                         "s_per_epoch": round(float(np.median(per_epoch)), 1),
                         "maps_gb": round(size / 1e9, 2),
                         "maps_s": round(sum(seconds.values()))})  # fmt: skip
            epochs.append({"cut": cut, "lr": lr, "history": info["history"]})
            print_table(rows, list(rows[-1]))
    print()
    print_table(rows, ["arch", "cut", "lr", "best_epoch", "val", *[k for k in rows[-1]
                       if k.startswith("test") or k.startswith("gain")], "s_per_epoch",
                       "maps_gb", "maps_s"])  # fmt: skip
    name = args.name or f"adapt_{args.arch}_{args.task}"
    payload = {"args": vars(args), "rows": rows, "epochs": epochs,
               "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    print(f"wrote {write_result(name, payload)}")


if __name__ == "__main__":
    main()
