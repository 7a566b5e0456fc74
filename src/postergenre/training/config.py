"""`TrainConfig`: everything `postergenre train` was asked to do, saved as the run's
config.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from postergenre.data.csv_files import label_limit_bytes

# The architecture trained when none is named: a linear probe on frozen EfficientNet-Lite0
# embeddings, the best practical choice here (three-genre test 0.642 against the article's CNN's
# 0.484-0.544; 90 s from raw posters, seconds once its embeddings are cached, where the CNN
# takes minutes per epoch for up to 30 epochs). `--arch seed-cnn` reproduces the article.
DEFAULT_ARCH = "efficientnet-lite0"
# Settings only gradient training reads: a probe or k-NN run does not record them.
GRADIENT_ONLY = ("epochs", "batch_size", "lr", "patience", "monitor", "augment")
# Settings only adapting reads.
ADAPT_ONLY = ("cut", "views", "maps")
# Epochs of gradient training when --epochs is not given (adapting has its own default).
GRADIENT_EPOCHS = 30


@dataclass
class TrainConfig:
    """Everything `postergenre train` was asked to do; saved as the run's config.json."""

    out: Path
    arch: str | None = None  # None: DEFAULT_ARCH, said on stderr when the run starts
    labels: Path | None = None
    images: Path | None = None
    splits: Path | None = None
    folder: Path | None = None
    genres: list[str] | None = None
    min_count: int | None = None
    task: str | None = None
    mode: str | None = None
    epochs: int | None = None  # None: the mode's default (GRADIENT_EPOCHS, or adapting's)
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    patience: int = 5
    monitor: str | None = None
    balance: str = "weights"
    augment: bool = True
    cache_dir: Path | None = None
    max_label_bytes: int | None = None
    calibrate: bool = True
    cut: int | None = None  # adapt: the first tuned stage (None: adapting's default)
    views: int | None = None  # adapt: maps cached per training poster (None: the default)
    maps: Path | None = None  # adapt: where to keep the early-stage maps (None: removed after)
    text: bool = False  # linear probes: also read the poster's text (OCR) and fuse it
    text_features: str = "ngrams"  # what the text model reads: ngrams, sentence or both
    ocr_det_side: int = 320  # OCR: the detector's input, the poster's short side scaled to this
    ocr_max_boxes: int = 0  # OCR: recognise only the largest this many text boxes (0: all)
    init_from: str | None = None  # a model whose genres (and head, as a prior) a probe starts from
    engine: str = "local"  # where frozen embeddings are computed: "local" or "ray"
    address: str | None = None  # the Ray cluster to join (engine "ray"; None: start Ray here)
    resume: bool = False
    progress: bool = True

    @classmethod
    def from_args(cls, args: Mapping[str, Any] | object) -> TrainConfig:
        """The config of `postergenre train`'s parsed arguments (a namespace or a mapping):
        settings named like the fields, and the flags that say three of them differently
        (`no_augment`, `no_calibrate`, `max_labels_mb`). Other names are ignored."""
        given = dict(args) if isinstance(args, Mapping) else vars(args)
        values = {f.name: given[f.name] for f in fields(cls) if f.name in given}
        if "no_augment" in given:
            values["augment"] = not given["no_augment"]
        if "no_calibrate" in given:
            values["calibrate"] = not given["no_calibrate"]
        if "max_labels_mb" in given:
            values["max_label_bytes"] = label_limit_bytes(given["max_labels_mb"])
        if values.get("arch", "") is None:  # not named: the --init-from model's, else the default
            from postergenre.training.retrain import default_arch

            values["arch"] = default_arch(values.get("init_from"))
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """Every setting, paths as strings."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def used(self) -> dict[str, Any]:
        """The settings this run actually uses (config.json): a linear probe or k-NN has no
        epochs, learning rate or augmentation, so they are not recorded as if it had."""
        data = self.to_json()
        data.pop("progress", None)
        if not self.text:
            for key in ("text_features", "ocr_det_side", "ocr_max_boxes"):
                data.pop(key, None)
        if self.mode in ("linear-probe", "knn"):
            for key in GRADIENT_ONLY:
                data.pop(key, None)
        if self.mode != "adapt":
            for key in ADAPT_ONLY:
                data.pop(key, None)
        elif self.epochs is None:
            data.pop("epochs")  # adapting's default, recorded with its settings in the card
        if self.mode == "knn":
            data.pop("balance", None)
            data.pop("calibrate", None)
        return data
