"""The model card: one validated reader and writer of model.json, and the rules it owns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from postergenre.cli import main
from postergenre.errors import UserError
from postergenre.inference import Predictor
from postergenre.models import ModelCard
from postergenre.models.card import CardError, to_probabilities
from postergenre.models.catalog import BUNDLED_DIR
from tests.conftest import make_card, make_poster, make_seed_bundle

DATA = Path(__file__).parent / "data"
# The Lite0 probe bundled until issue 9: its format-1 card, the same card in format 2, weights.
FORMAT_1 = DATA / "imdb-20-format1.json"
FORMAT_2 = DATA / "imdb-20-format2.json"
WEIGHTS = DATA / "imdb-20-format1.safetensors"


def test_card_round_trips_through_json(tmp_path):
    card = make_card(
        "efficientnet-lite0", ["A", "B"], "multi", "linear-head", thresholds=(0.2, 0.7)
    )
    card.write(tmp_path)
    again = ModelCard.read(tmp_path)
    assert again == card
    assert json.loads((tmp_path / "model.json").read_text())["thresholds"] == {"A": 0.2, "B": 0.7}


def test_a_card_that_reads_text_round_trips_and_its_tensors_are_checked(tmp_path):
    from postergenre.data.text import TextSpec
    from postergenre.models.bundle import build_model, load_bundle, save_bundle

    card = make_card("efficientnet-lite0", ["A", "B"], "multi", "linear-head",
                     text=TextSpec(buckets=64))  # fmt: skip
    assert card.reads_text and not make_card().reads_text
    save_bundle(tmp_path / "m", build_model(card, pretrained=False), card)
    assert ModelCard.read(tmp_path / "m") == card
    assert load_bundle(tmp_path / "m").model.text.in_features == 64
    wrong = card.replace(text=TextSpec(buckets=128))  # the card no longer fits the tensors
    wrong.write(tmp_path / "m")
    with pytest.raises(CardError, match=r"text\.weight has shape"):
        load_bundle(tmp_path / "m")


def test_a_format_1_bundle_loads_and_predicts_like_its_format_2_card(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, card_file in ((old, FORMAT_1), (new, FORMAT_2)):
        folder.mkdir()
        shutil.copy(card_file, folder / "model.json")
        shutil.copy(WEIGHTS, folder / "model.safetensors")
    card = ModelCard.read(old)
    assert card.kind == "linear-head" and card.task == "multi" and len(card.thresholds) == 20
    assert ModelCard.read(new).thresholds == card.thresholds
    poster = make_poster(tmp_path / "p.png", (40, 160, 90), size=(60, 90))
    then = Predictor.from_pretrained(old, runtime="torch").predict(poster)
    now = Predictor.from_pretrained(new, runtime="torch").predict(poster)
    np.testing.assert_array_equal(then.probabilities, now.probabilities)
    assert then[0].predicted == now[0].predicted


def _bad(tmp_path: Path, change) -> str:
    data = json.loads((BUNDLED_DIR / "three-genre" / "model.json").read_text())
    change(data)
    folder = tmp_path / "bad"
    folder.mkdir(exist_ok=True)
    (folder / "model.json").write_text(json.dumps(data))
    with pytest.raises(CardError) as caught:
        ModelCard.read(folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder / "model.json") in message
    assert message.isprintable()  # the refusal never echoes a control character raw
    return message


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.pop("genres"), "genres"),
        (lambda d: d.update(genres="Action"), "genres"),
        (lambda d: d.update(genres=["Action", "action"]), "genres"),
        (lambda d: d.pop("task"), "task"),
        (lambda d: d.update(task="regression"), "task"),
        (lambda d: d.update(kind="magic"), "kind"),
        (lambda d: d.pop("input"), "input"),
        (lambda d: d["input"].update(width=-3), "input.width"),
        (lambda d: d["input"].update(resize="stretch"), "input.resize"),
        (lambda d: d["input"].update(interpolation="sinc"), "input.interpolation"),
        (lambda d: d["input"].update(std=[0, 0, 0]), "input.std"),
        (lambda d: d["input"].update(mean=[0.5, 0.5]), "input.mean"),
        (lambda d: d.update(format_version="two"), "format_version"),
        (lambda d: d.update(task="multi"), "thresholds"),
        (lambda d: d.update(architecture=7), "architecture"),
        (lambda d: d.update(text="ocr"), "text"),
        (lambda d: d.update(text={"ngram_range": [2, 4]}), "text.buckets"),
        (lambda d: d.update(text={"buckets": 2**30, "ngram_range": [2, 4]}), "text.buckets"),
        (lambda d: d.update(text={"buckets": 64, "ngram_range": [4, 2]}), "text.ngram_range"),
        # Issue 17: every field is type-checked, not only those the model is built from.
        (lambda d: d.update(name=["imdb"]), "name"),
        (lambda d: d.update(description=5), "description"),
        (lambda d: d.update(postergenre_version=[0, 1]), "postergenre_version"),
        (lambda d: d.update(mode=7), "mode"),
        (lambda d: d.update(mode="dreaming"), "mode"),
        (lambda d: d.update(mode="scratch"), "mode"),  # a linear-head is not trained from scratch
        (lambda d: d.update(thresholds=[0.5]), "thresholds"),
        (lambda d: d.update(training="yesterday"), "training"),
        (lambda d: d.update(metrics=[]), "metrics"),
        (lambda d: d["training"].update(calibration="platt"), "training.calibration"),
        (lambda d: d["training"].update(calibration={"method": 1}), "training.calibration.method"),
        (
            lambda d: d["training"].update(calibration={"method": "magic"}),
            "training.calibration.method",
        ),
        (
            lambda d: d["training"].update(
                calibration={"method": "temperature", "temperature": "x"}
            ),
            "training.calibration.temperature",
        ),
        (
            lambda d: d["training"].update(calibration={"method": "platt", "scale": [1, 2]}),
            "training.calibration.scale",
        ),
        (
            lambda d: d["training"].update(train_prevalence=[0.1, 0.2, 0.7]),
            "training.train_prevalence",
        ),
        (
            lambda d: d["training"].update(train_prevalence={"Action": "most"}),
            "training.train_prevalence.Action",
        ),
        (lambda d: d["metrics"].update(test=[0.9]), "metrics.test"),
        (lambda d: d["metrics"]["test"].update(accuracy="0.9"), "metrics.test.accuracy"),
        (lambda d: d["metrics"].update(latency={"p50_ms": "fast"}), "metrics.latency.p50_ms"),
        (
            lambda d: d.update(text={"buckets": 64, "ngram_range": [2, 4], "reader": 3}),
            "text.reader",
        ),
        # Strings that get printed hold no control characters (a card cannot drive the terminal).
        (lambda d: d["genres"].__setitem__(0, "Act\x1b[2Jion"), "genres[0]"),
        (lambda d: d["genres"].__setitem__(2, "Dra\nma"), "genres[2]"),
        (lambda d: d["genres"].__setitem__(1, "Com\x9bedy"), "genres[1]"),  # C1 CSI
        (lambda d: d["genres"].__setitem__(1, "Com\x7fedy"), "genres[1]"),  # DEL
        (lambda d: d["genres"].__setitem__(1, "\ud800"), "genres[1]"),  # cannot even be printed
        (lambda d: d.update(name="imdb\r20"), "name"),
        (lambda d: d.update(description="\u202edrowkcab"), "description"),  # bidi override
        (lambda d: d["training"].update(data="posters\x07.csv"), "training.data"),
        (
            lambda d: d["metrics"]["test"]["per_genre"].update({"\x1b]0;pwned\x07": {}}),
            "metrics.test.per_genre",
        ),
    ],
)
def test_a_wrong_field_is_one_line_naming_the_field_and_the_file(tmp_path, change, field):
    assert f"field {field!r}" in _bad(tmp_path, change)


def test_cards_that_are_not_cards_are_refused(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for text, expected in [
        ("[1, 2]", "must be a JSON object"),
        ("{" * 100_000, "not valid JSON"),
        ('{"format": "something-else"}', "not a PosterGenre model"),
        ('{"format": "postergenre-bundle", "format_version": 99}', "upgrade postergenre"),
    ]:
        (folder / "model.json").write_text(text)
        with pytest.raises(CardError, match=expected):
            ModelCard.read(folder)


def test_decision_rule_and_genre_lookup():
    single = make_card("seed-cnn", ["Action", "Comedy", "Sci-Fi"])
    assert single.decide(np.array([0.2, 0.5, 0.3])).tolist() == [False, True, False]
    assert single.find_genre("sci-fi") == 2 and single.find_genre(" COMEDY ") == 1
    with pytest.raises(UserError, match="Action, Comedy, Sci-Fi"):
        single.find_genre("Horror")
    multi = make_card("seed-cnn", ["A", "B", "C"], "multi", thresholds=(0.3, 0.6, 0.1))
    probs = np.array([[0.35, 0.55, 0.9], [0.1, 0.9, 0.05]])
    assert multi.decide(probs).tolist() == [[True, False, True], [False, True, False]]
    assert multi.predicted_genres(probs[0]) == ["C", "A"]  # most probable first


@pytest.mark.parametrize("task", ["single", "multi"])
def test_to_probabilities_gives_the_same_numbers_for_arrays_and_tensors(task):
    import torch

    logits = np.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]], dtype=np.float32)
    from_array = to_probabilities(logits, task)
    from_tensor = to_probabilities(torch.from_numpy(logits), task)
    assert isinstance(from_array, np.ndarray) and isinstance(from_tensor, torch.Tensor)
    assert np.array_equal(from_array, from_tensor.numpy())
    if task == "single":
        assert np.allclose(from_array.sum(axis=1), 1.0)
    else:
        assert np.allclose(from_array, 1 / (1 + np.exp(-logits)))


def test_models_command_lists_bundled_models_from_their_cards(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "imdb-20 (default)" in out and "three-genre" in out
    assert "multi-label, 20 genres; test mAP" in out
    assert "single-label, 3 genres; test accuracy" in out
    assert "imdb-20-fast" in out and "efficientnet-lite012" in out
    # every bundled model states its calibration error and its single-poster latency
    for line in out.split("architectures")[0].splitlines()[1:]:
        if line.strip():
            assert "ECE" in line and "ms per poster" in line, line


def test_the_rule_line_says_what_predicted_means_and_whether_numbers_are_calibrated():
    platt = {"calibration": {"method": "platt"}}
    shared = make_card("seed-cnn", ["A", "B"], "multi", thresholds=(0.29, 0.29), training=platt)
    assert shared.describe_rule() == (
        "every genre at or above 29%; probabilities calibrated on validation posters (platt)"
    )
    own = make_card("seed-cnn", ["A", "B"], "multi", thresholds=(0.2, 0.6))
    assert own.describe_rule().startswith("every genre at or above its own threshold")
    assert own.describe_rule().endswith("not calibrated")
    assert make_card().describe_rule().startswith("the most probable genre")


def test_predict_prints_the_rule_under_its_table(tmp_path, capsys):
    poster = make_poster(tmp_path / "p.png", (20, 30, 200))
    assert main(["predict", "--model", "imdb-20-fast", str(poster)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("* predicted: every genre at or above ") and "calibrated" in last


def test_a_metric_the_card_leaves_undefined_is_shown_as_such(tmp_path, monkeypatch):
    from postergenre.models import catalog

    folder = make_seed_bundle(tmp_path / "bundled" / "m")
    card = ModelCard.read(folder).replace(metrics={"test": {"accuracy": None, "ece": None}})
    card.write(folder)
    monkeypatch.setattr(catalog, "BUNDLED_DIR", tmp_path / "bundled")
    [line] = catalog.describe_bundled()
    assert line.startswith("m ") and line.endswith("test accuracy n/a")
