"""Adapting a Lite backbone on the CPU: tune its top stages on cached early-stage maps.

Fine-tuning a whole EfficientNet-Lite costs minutes per epoch on two cores, most of it in the
early, high-resolution stages, which change least from ImageNet to posters. Adapting freezes
stages `[0, cut)`, runs them once per poster and *view* (view 0 is the poster as predicted;
views 1.. are random crops with colour jitter), keeps their output maps (float16, on disk,
memory-mapped), and trains stages `cut..`, the head conv and the classifier on those maps:
an epoch then costs only the top of the network. Each epoch draws one view per poster.

The result is the same network with new top weights, so it predicts, exports to one ONNX
graph and explains with Grad-CAM like any other. BatchNorm keeps its ImageNet statistics
(the network runs in eval mode; its affine weights are tuned), which suits batches of 32.
The classifier starts as the class-balanced linear probe on view 0's features, and the
epoch with the best validation score is kept.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from postergenre import console
from postergenre.console import format_bytes
from postergenre.data.cache import PosterCache
from postergenre.data.preprocess import Normalisation
from postergenre.data.store import file_key
from postergenre.data.targets import class_counts, describe_counts
from postergenre.data.transforms import Augmentation, to_model_input
from postergenre.errors import UserError
from postergenre.models import create_model
from postergenre.models.adapted import (
    EnsembleMember,
    Part,
    parts_of,
    pooled_from,
    tuned_prefixes,
)
from postergenre.models.card import to_probabilities
from postergenre.models.lite_ensemble import LiteEnsemble
from postergenre.training.config import TrainConfig
from postergenre.training.data import prepare_split
from postergenre.training.distributed import echo
from postergenre.training.fitting import FitJob, Fitted
from postergenre.training.probe import fit_linear_probe, validation_score
from postergenre.training.trainer import class_weights

MAP_BATCH = 16


class MapsUnavailable(UserError):
    """The early-stage maps cannot be written where they were to be kept."""

    hint = "choose a writable --maps folder, or leave --maps out"


@dataclass(frozen=True)
class AdaptSettings:
    """How to adapt: the first tuned stage, views per training poster, the schedule."""

    cut: int = 6  # stages [0, cut) frozen (0-based; Lite has 7 stages); cut.. tuned
    views: int = 2  # maps cached per training poster: the poster itself, then augmented views
    epochs: int = 4
    lr: float = 1e-4  # the tuned stages (AdamW, cosine decay to 0)
    head_lr: float = 1e-3  # the classifier
    weight_decay: float = 1e-4
    dropout: float = 0.2  # on the pooled features, while training
    batch_size: int = 32
    seed: int = 0

    def check(self) -> None:
        if not 1 <= self.cut <= 6:
            raise UserError(f"--cut must be 1..6 (the first stage to tune), got {self.cut}")
        if self.views < 1 or self.epochs < 1:
            raise UserError("--views and --epochs must be at least 1")


def tuned_parameters(model: nn.Module, parts: list[Part]) -> dict[str, nn.Parameter]:
    """The parameters adapting trains, by their name in `model`."""
    prefixes = tuned_prefixes(model, parts)
    return {n: p for n, p in model.named_parameters() if n.startswith(prefixes)}


class TrunkRunner:
    """The frozen stages of every part, run by ONNX Runtime: 2.5x eager PyTorch on these
    CPUs (BENCHMARKS.md, section 24); eager PyTorch when the graph cannot be made."""

    def __init__(self, parts: list[Part]):
        self.parts = parts
        self.session: Any = None

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(p.backbone.trunk(p.to_input(x), p.start) for p in self.parts)

    def _session(self, x: Tensor) -> Any:
        import io

        import onnxruntime as ort

        from postergenre.export.onnx import quiet_export

        # In eval mode: the exporter puts a module back in the mode it found it in, and a
        # training-mode wrapper would leave the backbones' BatchNorm in training mode.
        module = _Trunk(self).eval()
        buffer = io.BytesIO()
        with quiet_export(), torch.no_grad():
            torch.onnx.export(module, (x[:2],), buffer, dynamo=False, opset_version=17,
                              input_names=["x"], dynamic_axes={"x": {0: "batch"}})  # fmt: skip
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        return ort.InferenceSession(buffer.getvalue(), options, ["CPUExecutionProvider"])

    def __call__(self, x: Tensor) -> list[np.ndarray]:
        """Each part's maps of the batch `x`, float16."""
        if self.session is None:
            try:
                self.session = self._session(x)
            except Exception:  # any export failure: eager PyTorch gives the same maps
                self.session = False
        if self.session is False:
            with torch.no_grad():
                return [m.half().numpy() for m in self.forward(x)]
        return [
            m.astype(np.float16)
            for m in self.session.run(None, {"x": np.ascontiguousarray(x.numpy())})
        ]


class _Trunk(nn.Module):
    def __init__(self, runner: TrunkRunner):
        super().__init__()
        self.runner = runner
        self.backbones = nn.ModuleList(p.backbone for p in runner.parts)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.runner.forward(x)


@contextmanager
def _maps_refused(folder: Path) -> Iterator[None]:
    """An OSError while the maps are made or read is a `MapsUnavailable` error naming `folder`."""
    try:
        yield
    except OSError as exc:
        raise MapsUnavailable(
            f"cannot keep the early-stage maps in {folder}: {exc.strerror or exc}"
        ) from exc


def cache_maps(
    model: nn.Module,
    parts: list[Part],
    pixels: Callable[[np.ndarray], np.ndarray],
    n: int,
    views: int,
    normalisation: Normalisation,
    folder: Path,
    seed: int,
    label: str,
    progress: bool = True,
    key: str = "",
) -> list[np.ndarray]:
    """Each part's cut maps for `n` posters x `views`, float16 (n, views, C, h, w), in
    memory-mapped `.npy` files in `folder`, reused when a complete set was made for the same
    `key` (`maps_key`: the posters, cut, views and seed; its `.done` file holds it).
    `pixels(indices)` gives uint8 (B, H, W, 3) posters. A folder the filesystem refuses is a
    `MapsUnavailable` error."""
    with _maps_refused(folder):
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{p.name}.npy" for p in parts]
        done = folder / ".done"
        if done.exists() and done.read_text() == key + "\n" and all(p.exists() for p in paths):
            echo(f"{label}: early-stage maps reused from {folder}")
            return [np.load(p, mmap_mode="r") for p in paths]
        done.unlink(missing_ok=True)
        augment = Augmentation()
        generator = torch.Generator().manual_seed(seed)
        model.eval()
        trunk = TrunkRunner(parts)
        arrays: list[np.ndarray] = []
        bar = console.progress(n * views, f"{label}: early-stage maps", "view", progress)
        with torch.no_grad(), bar:
            for view, start in ((v, s) for v in range(views) for s in range(0, n, MAP_BATCH)):
                idx = np.arange(start, min(n, start + MAP_BATCH))
                x = to_model_input(pixels(idx), normalisation, augment if view else None, generator)
                for k, m in enumerate(trunk(x)):
                    if len(arrays) <= k:
                        shape = (n, views, *m.shape[1:])
                        arrays.append(np.lib.format.open_memmap(paths[k], "w+", np.float16, shape))
                    arrays[k][idx, view] = m
                bar.update(len(idx))
        for a in arrays:
            a.flush()  # type: ignore[attr-defined]
        done.write_text(key + "\n")
        return [np.load(p, mmap_mode="r") for p in paths]


def maps_key(arch: str, settings: AdaptSettings, paths: list[Path], views: int) -> str:
    """What a set of cached maps was made from: the architecture, cut, views and seed, and
    each poster file's identity (path, size, mtime), hashed."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update((file_key(path) + "\n").encode())
    return f"{arch} cut={settings.cut} views={views} seed={settings.seed} {digest.hexdigest()}"


def features(
    model: nn.Module, parts: list[Part], maps: list[np.ndarray], view: int = 0
) -> np.ndarray:
    """Pooled features of every poster's map `view`, in eval mode without gradients (in
    training mode BatchNorm would use, and update, batch statistics)."""
    model.eval()
    n = maps[0].shape[0]
    out = []
    with torch.no_grad():
        for start in range(0, n, 64):
            batch = [torch.from_numpy(np.array(m[start : start + 64, view])).float() for m in maps]
            out.append(pooled_from(model, parts, batch).numpy())
    return np.concatenate(out)


def probe_head(
    model: nn.Module,
    parts: list[Part],
    train_maps: list[np.ndarray],
    y_train: np.ndarray,
    val_maps: list[np.ndarray],
    y_val: np.ndarray,
    task: str,
    n_classes: int,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """The class-balanced linear probe on view 0's frozen features, C chosen on val."""
    x_train, x_val = (features(model, parts, m) for m in (train_maps, val_maps))
    return fit_linear_probe(x_train, y_train, x_val, y_val, task, n_classes, balanced=True)


def adapt(
    model: nn.Module,
    parts: list[Part],
    train_maps: list[np.ndarray],
    y_train: np.ndarray,
    val_maps: list[np.ndarray],
    y_val: np.ndarray,
    task: str,
    settings: AdaptSettings,
    n_classes: int,
    probe: tuple[Tensor, Tensor, dict[str, Any]] | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Tune `model`'s top stages and classifier in place on the cached maps; returns the
    kept epoch's validation logits and what happened (scores and seconds per epoch).
    `probe`: the linear probe on the frozen features, when already fitted (`probe_head`)."""
    model.eval()
    classifier: nn.Linear = model.classifier  # type: ignore[assignment]
    weight, bias, fitted = probe or probe_head(
        model, parts, train_maps, y_train, val_maps, y_val, task, n_classes
    )
    with torch.no_grad():
        classifier.weight.copy_(weight)
        classifier.bias.copy_(bias)

    tuned = tuned_parameters(model, parts)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in tuned.values():
        p.requires_grad_(True)
    head = [p for n, p in tuned.items() if n.startswith("classifier.")]
    body = [p for n, p in tuned.items() if not n.startswith("classifier.")]
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": settings.lr}, {"params": head, "lr": settings.head_lr}],
        weight_decay=settings.weight_decay,
    )
    n = len(y_train)
    steps = settings.epochs * -(-n // settings.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + np.cos(np.pi * min(step, steps) / steps))
    )
    weights = class_weights(y_train, n_classes, task)
    if task == "single":
        loss_fn: nn.Module = nn.CrossEntropyLoss(weight=weights)
    else:
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=weights)

    def val_logits() -> np.ndarray:
        feats = torch.from_numpy(features(model, parts, val_maps))
        with torch.no_grad():
            return classifier(feats).numpy()

    best_logits = val_logits()
    best_score = validation_score(task, y_val, to_probabilities(best_logits, task))
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history = [{"epoch": 0, "val_score": round(best_score, 4)}]
    rng = np.random.default_rng(settings.seed)
    views = train_maps[0].shape[1]
    for epoch in range(1, settings.epochs + 1):
        started, total = time.perf_counter(), 0.0
        order = rng.permutation(n)
        bar = console.progress(n, f"adapting, epoch {epoch}/{settings.epochs}", "img", progress)
        with bar:
            for start in range(0, n, settings.batch_size):
                idx = np.sort(order[start : start + settings.batch_size])
                view = rng.integers(0, views, len(idx))
                x = [torch.from_numpy(np.array(m[idx, view])).float() for m in train_maps]
                feats = F.dropout(pooled_from(model, parts, x), settings.dropout, training=True)
                target = torch.from_numpy(y_train[idx])
                loss = loss_fn(classifier(feats), target if task == "multi" else target.long())
                if not torch.isfinite(loss):
                    raise UserError(f"adapting diverged in epoch {epoch}: try a lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * len(idx)
                bar.update(len(idx))
        logits = val_logits()
        score = validation_score(task, y_val, to_probabilities(logits, task))
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch, "train_loss": round(total / n, 4),
                        "val_score": round(score, 4), "seconds": round(seconds, 1)})  # fmt: skip
        echo(f"epoch {epoch}: train loss {total / n:.4f}, val {score:.4f} ({seconds:.0f} s)")
        if score > best_score:
            best_score, best_logits = score, logits
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.requires_grad_(False)
    best_epoch = max(history, key=lambda h: h["val_score"])["epoch"]
    # The last epoch's features with a head fitted anew (the probe's rule, C on val): kept when
    # that beats every epoch on val (a head trained jointly can overfit what a probe would not).
    w, b, refit = probe_head(model, parts, train_maps, y_train, val_maps, y_val, task, n_classes)
    reprobe = {"C": refit["C"], "val_score": round(refit["val_score"], 4), "kept": False}
    if refit["val_score"] > best_score:
        with torch.no_grad():
            classifier.weight.copy_(w)
            classifier.bias.copy_(b)
        best_score, best_logits = refit["val_score"], val_logits()
        reprobe["kept"], best_epoch = True, settings.epochs
    else:
        model.load_state_dict(best_state)
    echo(f"a new head on the last epoch's features: val {refit['val_score']:.4f}"
         f" ({'kept' if reprobe['kept'] else f'epoch {best_epoch} kept'})")  # fmt: skip
    info = {
        "settings": asdict(settings),
        "probe_C": fitted["C"],
        "probe_val_score": round(fitted["val_score"], 4),
        "best_epoch": best_epoch,
        "reprobe": reprobe,
        "val_score": round(best_score, 4),
        "history": history,
    }
    return best_logits, info


def adapt_members(
    model: LiteEnsemble,
    parts: list[Part],
    train_maps: list[np.ndarray],
    y_train: np.ndarray,
    val_maps: list[np.ndarray],
    y_val: np.ndarray,
    task: str,
    settings: AdaptSettings,
    n_classes: int,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Adapt an ensemble backbone by backbone, each with a head of its own over the features
    it contributes (`adapt`), then fit the ensemble's classifier anew as a linear probe on the
    adapted features: what one backbone learns is not drowned by the others' features."""
    members = {}
    for k, part in enumerate(parts):
        echo(f"adapting {part.name} ({k + 1} of {len(parts)})")
        member = EnsembleMember(model, part.name, n_classes)
        _, members[part.name] = adapt(
            member, [part], [train_maps[k]], y_train, [val_maps[k]], y_val, task, settings,
            n_classes, progress=progress,
        )  # fmt: skip
    weight, bias, fitted = probe_head(
        model, parts, train_maps, y_train, val_maps, y_val, task, n_classes
    )
    classifier: nn.Linear = model.classifier
    with torch.no_grad():
        classifier.weight.copy_(weight)
        classifier.bias.copy_(bias)
        logits = classifier(torch.from_numpy(features(model, parts, val_maps))).numpy()
    echo(f"the ensemble's head on the adapted backbones: val {fitted['val_score']:.4f}")
    info = {
        "settings": asdict(settings),
        "members": members,
        "probe_C": fitted["C"],
        "val_score": round(fitted["val_score"], 4),
    }
    return logits, info


def adapt_settings(cfg: TrainConfig) -> AdaptSettings:
    """A run's adapting settings: what it was given, adapting's defaults for the rest."""
    base = AdaptSettings()
    settings = replace(
        base,
        cut=cfg.cut if cfg.cut is not None else base.cut,
        views=cfg.views or base.views,
        epochs=cfg.epochs or base.epochs,
        lr=cfg.lr or base.lr,
        batch_size=cfg.batch_size or base.batch_size,
        seed=cfg.seed,
    )
    settings.check()
    return settings


def fit_adapted(job: FitJob) -> Fitted:
    """`train --mode adapt`: cache the frozen stages' maps in the run folder (removed after),
    adapt the top stages on them, and hand back the kept epoch's model."""
    cfg, spec, _, by_split, genres, task = job.unpack()
    settings = adapt_settings(cfg)
    cache = PosterCache(cfg.cache_dir, spec.input)
    splits = {
        name: prepare_split(
            name, by_split[name], genres, task, lambda p: cache.load(p, progress=cfg.progress)
        )
        for name in ("train", "val")
    }
    counts = describe_counts(genres, class_counts(splits["train"].y, len(genres)))
    echo(f"train {len(splits['train'])} posters {counts}; val {len(splits['val'])}")
    torch.manual_seed(cfg.seed)
    model = create_model(spec.name, len(genres), pretrained=True)
    parts = parts_of(model, settings.cut)
    folder = cfg.maps or cfg.out / "stage-maps"
    try:
        maps = {}
        for name, split in splits.items():
            views = settings.views if name == "train" else 1
            key = maps_key(spec.name, settings, [r.path for r in split.records], views)
            maps[name] = cache_maps(
                model, parts, lambda idx, s=split: s.batch(idx)[0], len(split), views,
                spec.input.normalisation, folder / name, cfg.seed, name, cfg.progress, key,
            )  # fmt: skip
        size = sum(m.nbytes for split_maps in maps.values() for m in split_maps)
        kept = f"kept in {folder}" if cfg.maps else "removed when done; --maps DIR keeps them"
        echo(f"early-stage maps: {format_bytes(size)} ({kept})")
        # An ensemble is adapted backbone by backbone: it won on val (BENCHMARKS.md, 26).
        how = adapt_members if isinstance(model, LiteEnsemble) else adapt
        val_logits, info = how(
            model, parts, maps["train"], splits["train"].y, maps["val"], splits["val"].y,
            task, settings, len(genres), progress=cfg.progress,
        )  # type: ignore[arg-type]  # fmt: skip
        del maps
    finally:
        if cfg.maps is None:
            shutil.rmtree(folder, ignore_errors=True)
    info["maps_bytes"] = size
    val_probs = to_probabilities(val_logits, task)
    return Fitted(model, splits["train"].y, splits["val"].y, val_probs, info, val_logits)
