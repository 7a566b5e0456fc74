"""The Lite0 + Lite1 + Lite2 ensemble: one input, several backbones, one graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from postergenre.explain.gradcam import grad_cam
from postergenre.models import create_model, get_arch
from postergenre.models.efficientnet_lite import efficientnet_lite
from postergenre.models.lite_ensemble import lite_ensemble


@pytest.fixture(scope="module")
def ensemble():
    torch.manual_seed(0)
    return create_model("efficientnet-lite012", 4, pretrained=True).eval()


def test_features_are_each_backbone_on_its_own_portrait(ensemble):
    x = torch.randn(2, 3, 336, 224)
    with torch.no_grad():
        maps = ensemble.forward_features(x)
        embedding = ensemble.embed(x)
        lite1 = efficientnet_lite("lite1", 1000).eval()
        resized = torch.nn.functional.interpolate(
            x, size=(360, 240), mode="bilinear", align_corners=False
        )
        expected = lite1.embed(resized)
    # per backbone: the last block of stages 5 and 6, then the head map
    heads = [tuple(m.shape[-3:]) for m in maps[2::3]]
    assert heads == [(1280, 11, 7), (1280, 12, 8), (1280, 13, 9)]
    assert len(maps) == 9 and maps[0].shape[1] == 192 and maps[1].shape[1] == 320
    assert embedding.shape == (2, 5424) == (2, ensemble.num_features)
    lite0_width = 192 + 320 + 1280
    head1 = slice(lite0_width + 192 + 320, 2 * lite0_width)  # Lite1's head average pool
    np.testing.assert_allclose(embedding[:, head1], expected, atol=1e-5)
    assert get_arch("efficientnet-lite012").input.width == 224


def test_pooling_choices_widen_the_features():
    model = lite_ensemble(("lite0",), 3, pretrained=False, pooling=("avg", "max"), stages=(5,))
    x = torch.randn(1, 3, 336, 224)
    with torch.no_grad():
        out = model.embed(x)
    assert out.shape == (1, 2 * (1280 + 192)) and model(x).shape == (1, 3)
    with pytest.raises(ValueError):
        lite_ensemble(("lite0",), 3, pretrained=False, pooling=("median",))


def test_grad_cam_of_an_ensemble_sums_every_backbone_on_the_finest_grid(ensemble):
    x = torch.randn(1, 3, 336, 224)
    cam = grad_cam(ensemble, x, 2)
    assert cam.shape == (13, 9)  # Lite2 at 260x390: the finest of the stride-32 maps
    assert float(cam.max()) == pytest.approx(1.0) and float(cam.min()) >= 0.0
