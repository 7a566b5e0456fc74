"""Grad-CAM: the map follows the evidence in the input, for every kind of model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from postergenre.data.preprocess import UNIT_RANGE, InputSpec
from postergenre.data.transforms import to_model_input
from postergenre.errors import UserError
from postergenre.explain import explain_poster, grad_cam
from postergenre.explain.gradcam import heatmap_on_poster, overlay_heatmap
from postergenre.inference import Predictor
from postergenre.models.bundle import ModelBundle
from postergenre.models.seed_cnn import SeedCNN
from postergenre.training.run import TrainConfig, train
from tests.conftest import make_card, make_poster, make_seed_bundle

SIZE = 96  # a smaller seed-cnn input than the article's 150 keeps training to a few seconds
QUADRANTS = [(0, 0), (0, 1), (1, 0), (1, 1)]  # (row, column): top-left ... bottom-right


def corner_poster(rng: np.random.Generator, quadrant: tuple[int, int] | None) -> Image.Image:
    """A 100x150 grey noise poster, with a red square centred in `quadrant` if given."""
    w, h = 100, 150
    pixels = np.clip(128 + rng.normal(0, 30, (h, w, 3)), 0, 255)
    if quadrant is not None:
        sh, sw = h // 4, w // 4
        top = (h // 2 - sh) // 2 + quadrant[0] * h // 2
        left = (w // 2 - sw) // 2 + quadrant[1] * w // 2
        pixels[top : top + sh, left : left + sw] = (230, 20, 20)
    return Image.fromarray(pixels.astype(np.uint8))


def quadrant_means(heatmap: np.ndarray) -> dict[tuple[int, int], float]:
    h, w = heatmap.shape
    return {
        (r, c): float(heatmap[r * h // 2 : (r + 1) * h // 2, c * w // 2 : (c + 1) * w // 2].mean())
        for r, c in QUADRANTS
    }


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on busy cores they lose a lot to contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corner_predictor() -> Predictor:
    """A seed-cnn that learned "Corner" = a red square in any quadrant, "Plain" = noise only."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    spec = InputSpec(SIZE, SIZE, "squash", UNIT_RANGE)
    card = make_card("seed-cnn", ["Corner", "Plain"], input=spec)
    predictor = Predictor(ModelBundle(SeedCNN(2, (SIZE, SIZE)), card))
    images = [corner_poster(rng, QUADRANTS[i // 2 % 4] if i % 2 == 0 else None) for i in range(64)]
    x = to_model_input(np.stack([predictor.preprocess(im) for im in images]), UNIT_RANGE)
    y = torch.tensor([i % 2 for i in range(64)])
    model = predictor.model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(30):
        batch = torch.randperm(len(x))[:16]
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return predictor


@pytest.mark.parametrize("quadrant", [(0, 0), (1, 1)], ids=["top-left", "bottom-right"])
def test_heatmap_lights_up_where_the_evidence_is(corner_predictor, quadrant):
    explanation = corner_predictor.explain(corner_poster(np.random.default_rng(99), quadrant))
    assert explanation.genre == "Corner"
    assert explanation.probability > 0.9  # the model did learn the task
    means = quadrant_means(explanation.heatmap)
    rest = np.mean([m for q, m in means.items() if q != quadrant])
    assert means[quadrant] > 2 * rest, means


def test_grad_cam_works_on_frozen_models_and_restores_their_state(corner_predictor):
    model = corner_predictor.model
    pixels = corner_predictor.preprocess(corner_poster(np.random.default_rng(5), (0, 1)))
    x = to_model_input(np.stack([pixels]), UNIT_RANGE)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None
    model.train()  # grad_cam must explain the eval-mode model and hand back a training one
    try:
        cam = grad_cam(model, x, target=0)
        assert model.training
        assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    finally:
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    assert cam.shape == model.forward_features(x).shape[2:]
    assert cam.dtype == np.float32 and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    assert max(quadrant_means(cam).items(), key=lambda kv: kv[1])[0] == (0, 1)


class _DeadFeatures(nn.Module):
    """A model whose feature map is all zeros: Grad-CAM has nothing to show."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 4, 3, 2)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))[:, :2]


def test_an_all_zero_map_stays_zero():
    cam = grad_cam(_DeadFeatures(), torch.zeros(1, 3, 8, 8), target=1)
    assert cam.shape == (3, 2) and np.all(cam == 0)


def test_a_map_goes_back_over_the_poster_the_way_the_poster_was_resized():
    heatmap = np.zeros((10, 10), np.float32)
    heatmap[:, :5] = 1.0  # the input's left half
    squash = InputSpec(10, 10, "squash", UNIT_RANGE)
    assert heatmap_on_poster(heatmap, squash, (20, 40)) is heatmap  # stretched as it is

    # A 20x40 poster cropped to a square: the model saw rows 10..29, and nothing else.
    cropped = heatmap_on_poster(heatmap, InputSpec(10, 10, "crop", UNIT_RANGE), (20, 40))
    assert cropped.shape == (40, 20)
    assert (cropped[:10] == 0).all() and (cropped[30:] == 0).all()
    # bilinear: the two columns either side of the half's edge (9, 10) blend
    assert (cropped[10:30, :9] == 1).all() and (cropped[10:30, 11:] == 0).all()

    # A 10x20 poster padded to 20x20 fills input columns 5..14: the input's left half is
    # the poster's left half.
    wide = np.zeros((20, 20), np.float32)
    wide[:, :10] = 1.0
    padded = heatmap_on_poster(wide, InputSpec(20, 20, "pad", UNIT_RANGE), (10, 20))
    assert padded.shape == (20, 10)
    assert (padded[:, :5] == 1).all() and (padded[:, 5:] == 0).all()


def test_a_cropping_model_colours_only_the_part_of_the_poster_it_saw(corner_predictor):
    crop = InputSpec(SIZE, SIZE, "crop", UNIT_RANGE)
    card = make_card("seed-cnn", ["Corner", "Plain"], input=crop)
    poster = corner_poster(np.random.default_rng(3), (0, 0))  # 100x150: the crop keeps 25..124

    explanation = explain_poster(corner_predictor.model, card, poster, "Corner")

    overlay = np.asarray(explanation.overlay)
    cold = np.asarray(overlay_heatmap(poster, np.zeros((1, 1), np.float32)))
    assert np.array_equal(overlay[:25], cold[:25]) and np.array_equal(overlay[125:], cold[125:])
    assert not np.array_equal(overlay[25:125], cold[25:125])


def test_unknown_genre_is_a_user_error_listing_the_known_ones(corner_predictor):
    with pytest.raises(UserError, match="Corner, Plain"):
        corner_predictor.explain(corner_poster(np.random.default_rng(1), None), "Horror")


def test_genre_names_are_matched_without_case(corner_predictor):
    poster = corner_poster(np.random.default_rng(2), (0, 0))
    assert corner_predictor.explain(poster, "corner").genre == "Corner"
    assert corner_predictor.explain(poster, "PLAIN").genre == "Plain"


def test_explains_efficientnet_lite_probe_and_knn(tiny_posters, tmp_path):
    poster = Image.open(next((tiny_posters / "test" / "Drama").glob("*.png"))).convert("RGB")
    for arch in ("efficientnet-lite0", "knn"):  # same backbone: embeddings are cached once
        config = TrainConfig(out=tmp_path / arch, folder=tiny_posters, arch=arch, progress=False)
        predictor = Predictor.from_pretrained(train(config), runtime="torch")
        expected = predictor.predict(poster)[0]
        spec = predictor.input_spec

        explanation = predictor.explain(poster)
        assert explanation.genre == expected.predicted[0], arch
        assert explanation.probability == pytest.approx(expected.genres[0][1], abs=1e-5), arch
        heatmap = explanation.heatmap
        assert heatmap.shape == (spec.height, spec.width), arch
        assert np.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() <= 1, arch
        assert heatmap.max() > 0, arch  # a map with something in it
        assert explanation.overlay.size == poster.size and explanation.overlay.mode == "RGB"
        assert explanation.raw.shape == (11, 7)  # Lite0's 1/32 map of 224x336

        other = next(g for g in predictor.genres if g != explanation.genre)
        probabilities = dict(expected.genres)
        assert predictor.explain(poster, other).probability == pytest.approx(
            probabilities[other], abs=1e-5
        )


def test_overlay_path_default_folder_and_file(tmp_path, monkeypatch):
    from postergenre.explain.gradcam import overlay_path

    monkeypatch.chdir(tmp_path)
    poster = Path("/data/posters/tt0133093.jpg")
    # default: the current folder, never beside the poster; absolute, so it can be printed
    assert overlay_path(poster) == tmp_path / "tt0133093.gradcam.png"
    assert overlay_path(poster, "heat/") == tmp_path / "heat" / "tt0133093.gradcam.png"
    (tmp_path / "existing").mkdir()
    assert overlay_path(poster, "existing") == tmp_path / "existing" / "tt0133093.gradcam.png"
    assert overlay_path(poster, "out/m.webp") == tmp_path / "out" / "m.webp"
    with pytest.raises(UserError, match=r"must end in .png, .jpg or .webp \(or name a folder\)"):
        overlay_path(poster, "m.txt")


def test_cli_explain_prints_where_it_wrote(tmp_path, monkeypatch, capsys):
    from postergenre.cli import main

    bundle = make_seed_bundle(tmp_path / "bundle")
    poster = make_poster(tmp_path / "posters" / "p.png", (200, 30, 30), 0)
    monkeypatch.chdir(tmp_path)
    assert main(["explain", "--model", str(bundle), str(poster)]) == 0
    assert f"heatmap overlay written to {tmp_path / 'p.gradcam.png'}" in capsys.readouterr().out
    assert (tmp_path / "p.gradcam.png").is_file()
    assert not (tmp_path / "posters" / "p.gradcam.png").exists()
    assert main(["explain", "--model", str(bundle), str(poster), "--out", "heat/", "--npy"]) == 0
    out = capsys.readouterr().out
    assert f"written to {tmp_path / 'heat' / 'p.gradcam.png'}" in out
    assert f"raw heatmap written to {tmp_path / 'heat' / 'p.gradcam.npy'}" in out
