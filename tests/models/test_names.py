"""Names a person types: bundled models and architectures match without case where that is
unambiguous, and an unknown name gets "did you mean" (one rule, `models.names`)."""

from __future__ import annotations

import pytest

from postergenre.cli import main
from postergenre.errors import UserError
from postergenre.models import get_arch
from postergenre.models.catalog import BUNDLED_DIR, resolve_model
from postergenre.models.names import did_you_mean, match_name
from tests.conftest import make_poster


def test_match_name_exact_then_without_case_when_unambiguous():
    known = ["imdb-20", "imdb-20-fast", "Mixed", "mixed"]
    assert match_name("imdb-20", known) == "imdb-20"
    assert match_name("IMDB-20-Fast", known) == "imdb-20-fast"
    assert match_name("mixed", known) == "mixed"  # exact wins
    assert match_name("MIXED", known) is None  # two names differ only in case: ambiguous
    assert match_name("imdb", known) is None


def test_did_you_mean_offers_the_close_names_or_lists_them_all():
    known = ["imdb-20", "imdb-20-fast", "three-genre"]
    assert did_you_mean("tree-genre", known) == "did you mean 'three-genre'?"
    assert did_you_mean("IMDB20", known).startswith("did you mean 'imdb-20'")
    assert did_you_mean("zzz", known) == "known: imdb-20, imdb-20-fast, three-genre"


def test_bundled_model_names_in_any_case(tmp_path, monkeypatch):
    assert resolve_model("IMDB-20") == BUNDLED_DIR / "imdb-20"
    assert resolve_model("Three-Genre") == BUNDLED_DIR / "three-genre"
    with pytest.raises(UserError, match=r"no model at 'imdb20'.*did you mean 'imdb-20'"):
        resolve_model("imdb20")
    monkeypatch.chdir(tmp_path)  # a folder of the same name in other case is that folder
    (tmp_path / "IMDB-20").mkdir()
    with pytest.raises(UserError, match="no model at 'IMDB-20'"):
        resolve_model("IMDB-20")


def test_architecture_names_in_any_case():
    assert get_arch("Seed-CNN").name == "seed-cnn"
    assert get_arch("EFFICIENTNET-LITE0").name == "efficientnet-lite0"
    with pytest.raises(UserError, match=r"unknown architecture 'seed-cn'; did you mean 'seed-cnn'"):
        get_arch("seed-cn")


def test_cli_says_did_you_mean_in_one_line(tmp_path, capsys):
    poster = make_poster(tmp_path / "p.png", (200, 30, 30), 0)
    assert main(["predict", "--model", "imdb-20-fats", str(poster)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'imdb-20-fast'" in err[0]
    assert main(["train", "--folder", str(tmp_path), "--out", str(tmp_path / "r"), "--arch",
                 "Efficientnet-lite9"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'efficientnet-lite2', 'efficientnet-lite1' or" in err[0]
