"""Adapting a Lite backbone's top stages on cached early-stage maps (`train --mode adapt`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from postergenre.cli.main import main
from postergenre.data.cache import PosterCache
from postergenre.inference import Predictor
from postergenre.models import create_model, get_arch
from postergenre.models.adapted import parts_of, pooled_from, tuned_names
from postergenre.models.bundle import load_bundle
from postergenre.models.card import CardError, ModelCard
from postergenre.training.adapt import (
    AdaptSettings,
    TrunkRunner,
    adapt,
    adapt_members,
    cache_maps,
    features,
)
from postergenre.training.run import TrainConfig, train

CUT = 6


def _tiny_maps(arch: str, root: Path, tiny_posters: Path, views: int):
    """`arch` with ImageNet weights, a copy of its state, its parts cut at CUT, and the cut maps
    and labels of the tiny training posters."""
    records = sorted((tiny_posters / "train").rglob("*.png"))
    y = np.array([["Action", "Comedy", "Drama"].index(p.parent.name) for p in records])
    spec = get_arch(arch)
    pixels = PosterCache(root / "cache", spec.input).load(records, progress=False)
    model = create_model(arch, 3, pretrained=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parts = parts_of(model, CUT)
    maps = cache_maps(model, parts, lambda idx: pixels[idx], len(y), views,
                      spec.input.normalisation, root / "maps", 0, "train", False)  # fmt: skip
    return model, before, parts, maps, y


@pytest.fixture(scope="module")
def adapted_run(tiny_posters: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lite0 adapted on the tiny posters: stage 6, the head and classifier tuned."""
    out = tmp_path_factory.mktemp("adapt") / "run"
    cache = tmp_path_factory.mktemp("adapt-cache")
    settings = {"mode": "adapt", "cut": CUT, "views": 2, "epochs": 2, "lr": 1e-3}
    arch = "efficientnet-lite0"
    train(TrainConfig(out=out, folder=tiny_posters, arch=arch, cache_dir=cache, **settings))
    return out


def test_trunk_then_top_is_the_whole_network():
    torch.manual_seed(0)
    model = create_model("efficientnet-lite0", 3, pretrained=False).eval()
    x = torch.randn(2, 3, 64, 48)
    for cut in (1, 4, 6):
        start = model.first_block(cut)
        split = model.maps_from(model.trunk(x, start), start)[-1]
        assert torch.allclose(split, model.forward_features(x), atol=1e-5)


def test_the_frozen_stages_run_by_onnx_runtime_give_pytorch_s_maps():
    torch.manual_seed(0)
    model = create_model("efficientnet-lite012", 3, pretrained=False).eval()
    runner = TrunkRunner(parts_of(model, 6))
    x = torch.randn(3, 3, 96, 64)
    maps = runner(x)
    assert runner.session not in (None, False), "the graph was not made"
    assert not any(m.training for m in model.modules()), "exporting changed the model's mode"
    for ours, eager in zip(maps, runner.forward(x), strict=True):
        assert ours.dtype == np.float16 and ours.shape == tuple(eager.shape)
        assert np.allclose(ours, eager.detach().numpy(), atol=2e-2, rtol=1e-2)


def test_the_ensemble_pools_the_same_features_from_cut_maps():
    torch.manual_seed(0)
    model = create_model("efficientnet-lite012", 3, pretrained=False).eval()
    x = torch.randn(1, 3, 96, 64)
    for cut in (4, 5, 6):
        parts = parts_of(model, cut)
        assert [p.name for p in parts] == ["lite0", "lite1", "lite2"]
        maps = [p.backbone.trunk(p.to_input(x), p.start) for p in parts]
        # At cut 6 the pooled stage-5 map is the cached map itself.
        assert torch.allclose(pooled_from(model, parts, maps), model.embed(x), atol=1e-5)
    with pytest.raises(ValueError, match="end before"):
        model.backbones["lite0"].maps_from(x, model.backbones["lite0"].first_block(6), (4,))


def test_the_bundle_stores_only_the_tuned_tensors(adapted_run: Path):
    bundle = adapted_run / "model"
    card = ModelCard.read(bundle)
    assert (card.kind, card.mode, card.cut) == ("adapted", "adapt", CUT)
    with safe_open(bundle / "model.safetensors", "pt") as f:
        stored = set(f.keys())
    model = create_model("efficientnet-lite0", 3, pretrained=False)
    assert stored == set(tuned_names(model, CUT))
    start = model.first_block(CUT)
    assert all(
        n.startswith(("head.", "classifier.")) or int(n.split(".")[1]) >= start for n in stored
    )
    assert "stem.conv.weight" not in stored
    assert f"blocks.{start - 1}.project.bn.weight" not in stored


def test_adapting_tunes_the_top_and_leaves_the_frozen_stages_alone(
    tiny_posters: Path, tmp_path: Path
):
    model, before, parts, maps, y = _tiny_maps("efficientnet-lite0", tmp_path, tiny_posters, 2)
    assert maps[0].shape[:2] == (len(y), 2) and maps[0].dtype == np.float16
    # A head that knows nothing (every logit 0): the first epoch must beat it.
    blank = (torch.zeros(3, 1280), torch.zeros(3), {"C": 0.0, "val_score": 0.0})
    settings = AdaptSettings(cut=CUT, views=2, epochs=2, lr=1e-3, head_lr=1e-2)
    _, info = adapt(model, parts, maps, y, maps, y, "single", settings, 3, blank, False)
    assert info["best_epoch"] >= 1 and info["val_score"] > 1 / 3
    after = model.state_dict()
    start = model.first_block(CUT)
    assert torch.equal(after["stem.conv.weight"], before["stem.conv.weight"])
    frozen = f"blocks.{start - 1}.project.conv.weight"
    assert torch.equal(after[frozen], before[frozen])
    assert not torch.equal(after["head.conv.weight"], before["head.conv.weight"])
    assert not torch.equal(after[f"blocks.{start}.expand.conv.weight"],
                           before[f"blocks.{start}.expand.conv.weight"])  # fmt: skip


def test_the_run_records_its_settings_and_removes_the_cached_maps(adapted_run: Path):
    assert not (adapted_run / "stage-maps").exists()
    config = json.loads((adapted_run / "config.json").read_text())
    assert (config["mode"], config["cut"], config["views"], config["epochs"]) == (
        "adapt", CUT, 2, 2,
    )  # fmt: skip
    training = ModelCard.read(adapted_run / "model").training
    assert training["settings"]["cut"] == CUT and len(training["history"]) == 3
    assert training["maps_bytes"] > 0


def test_an_adapted_model_predicts_the_same_through_the_exported_graph(
    adapted_run: Path, tiny_posters: Path
):
    posters = sorted((tiny_posters / "test").rglob("*.png"))[:4]
    torch_probs = Predictor.from_pretrained(adapted_run, runtime="torch").predict(
        posters, progress_bar=False
    )
    onnx_probs = Predictor.from_pretrained(adapted_run, runtime="onnx").predict(
        posters, progress_bar=False
    )
    assert np.allclose(torch_probs.probabilities, onnx_probs.probabilities, atol=1e-4)
    assert np.allclose(torch_probs.probabilities.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("adapt"), "must say where its tuned stages start"),
        (lambda d: d.update(adapt={"cut": 9}), "adapt.cut"),
        (lambda d: d.update(adapt={"cut": 5}), "tensors do not match"),
        (lambda d: d.update(kind="linear-head", mode="linear-probe"), "adapt"),
    ],
)
def test_a_card_that_does_not_fit_its_tensors_is_refused(
    adapted_run: Path, tmp_path: Path, change, message: str
):
    bundle = tmp_path / "model"
    shutil.copytree(adapted_run / "model", bundle)
    card = json.loads((bundle / "model.json").read_text())
    change(card)
    (bundle / "model.json").write_text(json.dumps(card))
    with pytest.raises(CardError, match=message):
        load_bundle(bundle)


def test_cli_refuses_adapting_an_architecture_that_has_no_stages(
    tiny_posters: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    code = main(["train", "--folder", str(tiny_posters), "--arch", "seed-cnn", "--mode", "adapt",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "adapt" in err


def test_retraining_an_adapted_model_keeps_its_tuned_network(
    adapted_run: Path, tiny_posters: Path, tmp_path: Path
):
    """`train --init-from ADAPTED`: the probe reads the adapted network's own features, and the
    new model is that network with the new head (not a probe on the frozen backbone)."""
    init = str(adapted_run / "model")
    cfg = TrainConfig(out=tmp_path / "retrained", folder=tiny_posters, init_from=init,
                      arch="efficientnet-lite0", cache_dir=tmp_path / "cache")  # fmt: skip
    bundle = train(cfg)
    card = ModelCard.read(bundle)
    assert (card.kind, card.cut) == ("adapted", CUT)
    assert "its head" in card.training["init_from"]["used"]
    before = load_bundle(adapted_run / "model").model.state_dict()
    after = load_bundle(bundle).model.state_dict()
    assert torch.equal(before["head.conv.weight"], after["head.conv.weight"])
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_an_adapted_model_scores_an_index_over_its_own_cached_features(
    adapted_run: Path, tiny_posters: Path, tmp_path: Path
):
    """What a collection does after a retrain: score every indexed poster through the model's
    head over cached features, here the adapted network's own (cached once per network)."""
    from postergenre.curation.scores import head_scores
    from postergenre.inference.index_build import build_index
    from postergenre.models.embeddings import embedding_store

    cache = tmp_path / "cache"
    index = build_index([tiny_posters / "test"], model=None, cache_dir=cache, progress=False)
    predictor = Predictor.from_pretrained(adapted_run, runtime="torch", cache_dir=cache)
    scores, why = head_scores(predictor, index, cache)
    assert scores is not None, why
    paths = [Path(item["path"]) for item in index.items]
    expected = predictor.predict(paths, progress_bar=False).probabilities
    assert np.allclose(scores.probabilities, expected, atol=1e-4)
    store = embedding_store("efficientnet-lite0", cache, predictor.model)
    assert "-tuned-" in store.directory.name and store.directory.is_dir()


def test_features_leave_batchnorm_statistics_alone_whatever_mode_the_model_is_in():
    torch.manual_seed(0)
    model = create_model("efficientnet-lite0", 3, pretrained=False)  # training mode
    parts = parts_of(model, CUT)
    maps = [np.random.default_rng(0).normal(size=(5, 1, 192, 3, 2)).astype(np.float16)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = features(model, parts, maps)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert np.array_equal(first, features(model, parts, maps))  # no batch statistics either


def test_an_ensemble_adapted_backbone_by_backbone(tiny_posters: Path, tmp_path: Path):
    model, before, parts, maps, y = _tiny_maps("efficientnet-lite012", tmp_path, tiny_posters, 1)
    settings = AdaptSettings(cut=CUT, views=1, epochs=1, lr=1e-3)
    logits, info = adapt_members(model, parts, maps, y, maps, y, "single", settings, 3, False)
    assert set(info["members"]) == {"lite0", "lite1", "lite2"} and logits.shape == (len(y), 3)
    with torch.no_grad():
        expected = model.classifier(torch.from_numpy(features(model, parts, maps))).numpy()
    assert np.allclose(logits, expected, atol=1e-5)
    after = model.state_dict()
    for name in ("lite0", "lite1", "lite2"):  # each backbone's frozen stem is untouched
        key = f"backbones.{name}.stem.conv.weight"
        assert torch.equal(before[key], after[key])


def test_train_adapts_an_ensemble_backbone_by_backbone(tiny_posters: Path, tmp_path: Path):
    settings = {"mode": "adapt", "cut": CUT, "views": 1, "epochs": 1}
    cfg = TrainConfig(out=tmp_path / "run", folder=tiny_posters, arch="efficientnet-lite012",
                      cache_dir=tmp_path / "cache", progress=False, **settings)  # fmt: skip
    card = ModelCard.read(train(cfg))
    assert (card.kind, card.cut) == ("adapted", CUT)
    assert set(card.training["members"]) == {"lite0", "lite1", "lite2"}


def test_cli_refuses_a_maps_folder_it_cannot_write(
    tiny_posters: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    (tmp_path / "a-file").write_text("not a folder")
    maps, cache, out = tmp_path / "a-file" / "maps", tmp_path / "cache", tmp_path / "run"
    code = main(["train", "--folder", str(tiny_posters), "--arch", "efficientnet-lite0",
                 "--mode", "adapt", "--epochs", "1", "--maps", str(maps),
                 "--cache-dir", str(cache), "--out", str(out)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()  # progress lines, then the one-line refusal
    assert "Traceback" not in err
    assert "cannot keep the early-stage maps" in err.splitlines()[-1], err
