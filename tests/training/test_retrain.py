"""Retraining from a corrections file (`training.retrain`, `train --init-from`), on tiny
generated posters whose genre is their colour."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from postergenre.cli import main
from postergenre.errors import UserError
from postergenre.inference import Predictor
from postergenre.models import create_model
from postergenre.models.bundle import save_bundle
from postergenre.training.config import TrainConfig
from postergenre.training.retrain import MIN_REVIEWED, default_arch, retrain_from_corrections
from postergenre.training.run import train
from tests.conftest import make_card, make_seed_bundle

HEADER = ["id", "path", "title", "genres", "reviewed", "reviewed_at"]
INIT_GENRES = ("Action", "Comedy", "Drama", "Horror")  # no tiny poster shows Horror


def write_corrections(tiny_posters: Path, out: Path, reviewed: int | None = None) -> Path:
    """A corrections file over every tiny poster (absolute paths, no split): the first
    `reviewed` rows (default all but 4) marked reviewed."""
    posters = sorted(tiny_posters.rglob("*.png"))
    reviewed = len(posters) - 4 if reviewed is None else reviewed
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i, path in enumerate(posters):
            done = i < reviewed
            stamp = "2026-12-03T10:11:12Z" if done else ""
            writer.writerow([f"p{i}", path, "", path.parent.name, int(done), stamp])
    return out


def make_init_bundle(folder: Path, calibrated_on: int | None = None) -> Path:
    """A calibrated lite0 linear-probe bundle over INIT_GENRES with a random head (its card
    says it was calibrated on `calibrated_on` val posters, if given)."""
    torch.manual_seed(0)
    model = create_model("efficientnet-lite0", len(INIT_GENRES), pretrained=True)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.01)
        model.classifier.bias.fill_(-1.0)
    calibration = {"method": "platt", "scale": [0.5, 1.0, 2.0, 1.5], "shift": [0.1, 0, -1, 0.2]}
    training = {"calibration": calibration}
    if calibrated_on is not None:
        training["splits"] = {"train": 5000, "val": calibrated_on}
    card = make_card(
        "efficientnet-lite0", INIT_GENRES, task="multi", kind="linear-head",
        mode="linear-probe", name="init", training=training, thresholds=(0.3, 0.4, 0.5, 0.6),
    )  # fmt: skip
    return save_bundle(folder, model, card)


@pytest.fixture(scope="module")
def corrections(tiny_posters, tmp_path_factory) -> Path:
    return write_corrections(tiny_posters, tmp_path_factory.mktemp("collection") / "c.csv")


@pytest.fixture(scope="module")
def init_bundle(tmp_path_factory) -> Path:
    return make_init_bundle(tmp_path_factory.mktemp("init") / "init")


@pytest.fixture(scope="module")
def retrained(corrections, init_bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("retrained") / "run"
    return retrain_from_corrections(corrections, out, init_from=str(init_bundle))


def test_the_retrained_bundle_loads_and_predicts_the_colours(retrained, tiny_posters):
    predictor = Predictor.from_pretrained(retrained, runtime="torch")
    posters = sorted((tiny_posters / "test").rglob("*.png"))

    predictions = predictor.predict(posters)

    top = [p.genres[0][0] for p in predictions]
    correct = sum(name == path.parent.name for name, path in zip(top, posters, strict=True))
    assert correct / len(posters) >= 0.9


def test_init_from_keeps_its_genres_and_the_head_of_genres_never_shown(retrained, init_bundle):
    card = json.loads((retrained / "model.json").read_text())
    init = load_file(str(init_bundle / "model.safetensors"))
    new = load_file(str(retrained / "model.safetensors"))

    assert card["genres"] == list(INIT_GENRES)
    assert card["training"]["init_from"]["kept_genres"] == ["Horror"]
    assert "head" in card["training"]["init_from"]["used"]
    assert card["training"]["toward_prior"] is True
    # Horror: no poster shows it, so its row is the init model's, calibration and all.
    horror = INIT_GENRES.index("Horror")
    torch.testing.assert_close(new["classifier.weight"][horror], init["classifier.weight"][horror])
    torch.testing.assert_close(new["classifier.bias"][horror], init["classifier.bias"][horror])
    assert card["training"]["calibration"]["scale"][horror] == 1.0  # no val positive: unchanged
    # The other genres were refitted.
    assert not torch.allclose(new["classifier.weight"][0], init["classifier.weight"][0])


def test_metrics_come_from_held_out_reviewed_posters_only(retrained, corrections):
    card = json.loads((retrained / "model.json").read_text())
    reviewed = sum(row["reviewed"] == "1" for row in csv.DictReader(corrections.open()))

    assert set(card["metrics"]) == {"val"}  # no test numbers claimed
    splits = card["training"]["splits"]
    assert splits["train"] + splits["val"] == reviewed
    assert splits["val"] == round(reviewed * 0.1)
    assert card["metrics"]["val"]["n"] == splits["val"]


def test_without_init_the_genres_come_from_the_corrections(corrections, tmp_path):
    bundle = retrain_from_corrections(corrections, tmp_path / "run", progress=False)

    card = json.loads((bundle / "model.json").read_text())
    assert card["task"] == "multi"
    assert sorted(card["genres"]) == ["Action", "Comedy", "Drama"]
    assert "init_from" not in card["training"]


def test_init_from_another_architecture_takes_its_genres_only(corrections, tmp_path, capsys):
    seed = make_seed_bundle(tmp_path / "seed", genres=("Action", "Comedy", "Drama", "Horror"))

    bundle = retrain_from_corrections(
        corrections, tmp_path / "run", init_from=str(seed), progress=False
    )

    card = json.loads((bundle / "model.json").read_text())
    assert card["genres"] == ["Action", "Comedy", "Drama"]  # Horror cannot be learnt here
    assert card["task"] == "single"  # the init model's task
    assert card["training"]["init_from"]["used"].startswith("its genres only")
    assert "no training poster shows Horror: left out" in capsys.readouterr().err


def test_the_cli_retrains_and_evaluate_reads_the_corrections(corrections, init_bundle, tmp_path):
    out = tmp_path / "cli-run"
    argv = ["train", "--labels", str(corrections), "--arch", "efficientnet-lite0"]
    assert main([*argv, "--init-from", str(init_bundle), "--out", str(out)]) == 0
    assert (out / "model" / "model.json").is_file()

    code = main(["evaluate", "--model", str(out), "--runtime", "torch", "--labels",
                 str(corrections), "--json"])  # fmt: skip

    assert code == 0


def test_too_few_reviewed_posters_is_one_line_and_exit_2(tiny_posters, tmp_path, capsys):
    labels = write_corrections(tiny_posters, tmp_path / "c.csv", reviewed=MIN_REVIEWED - 1)

    code = main(["train", "--labels", str(labels), "--arch", "efficientnet-lite0",
                 "--out", str(tmp_path / "run")])  # fmt: skip

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len([line for line in err if "error" in line]) == 1
    expected = f"{MIN_REVIEWED - 1} reviewed posters; a retrain needs at least {MIN_REVIEWED}"
    assert expected in err[-1]
    assert not (tmp_path / "run" / "model").exists()


def test_init_from_refuses_other_ways_of_fitting(corrections, init_bundle, tmp_path):
    config = TrainConfig(out=tmp_path / "run", arch="knn", labels=corrections,
                         init_from=str(init_bundle), progress=False)  # fmt: skip

    with pytest.raises(UserError, match="--init-from starts a linear probe"):
        train(config)


def test_train_takes_the_init_models_architecture_when_none_is_named(init_bundle):
    assert default_arch(str(init_bundle)) == "efficientnet-lite0"
    assert default_arch(None) is None  # the run's default (training.config.DEFAULT_ARCH)


def test_few_held_out_posters_keep_the_init_models_calibration_and_thresholds(
    corrections, tmp_path
):
    init = make_init_bundle(tmp_path / "init", calibrated_on=1000)

    bundle = retrain_from_corrections(corrections, tmp_path / "run", init_from=str(init))

    card = json.loads((bundle / "model.json").read_text())
    calibration = card["training"]["calibration"]
    assert calibration["scale"] == [0.5, 1.0, 2.0, 1.0]  # Horror kept whole: already calibrated
    assert calibration["shift"] == [0.1, 0.0, -1.0, 0.0]
    assert card["thresholds"] == {"Action": 0.3, "Comedy": 0.4, "Drama": 0.5, "Horror": 0.6}
    assert "started from" in calibration["decision_rule"]
