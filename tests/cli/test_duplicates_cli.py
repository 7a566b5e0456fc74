"""`postergenre duplicates`: table, JSON, CSV and contact sheet outputs, and one-line refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from postergenre.cli import main
from tests.curation.planted import make_planted_folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_planted_folder(tmp_path_factory.mktemp("planted") / "posters")


def test_json_lists_groups_with_members_kind_and_similarity(planted, capsys):
    assert main(["duplicates", str(planted), "--json"]) == 0
    out, err = capsys.readouterr()
    groups = json.loads(out)
    assert len(groups) == 5
    assert set(groups[0]) == {"kind", "similarity", "size", "members"}
    assert groups[0]["kind"] == "exact" and groups[0]["size"] == 2
    member = groups[0]["members"][0]
    assert set(member) == {"id", "path", "shown", "title", "name", "width", "height", "bytes"}
    assert Path(member["path"]).is_absolute() and member["width"] == 160
    assert "5 groups of duplicates among 13 posters" in err


def test_table_csv_sheet_and_max_groups(planted, tmp_path, capsys):
    out_csv, sheet = tmp_path / "d.csv", tmp_path / "sheet.jpg"
    argv = ["duplicates", str(planted), "--csv", str(out_csv), "--sheet", str(sheet)]
    assert main([*argv, "--max-groups", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("#1  exact, lowest similarity 1.000, 2 posters")
    assert "#2  same image" in out and "#3" not in out
    assert "5 groups of duplicates (showing 2)" in err
    with out_csv.open(newline="") as handle:
        assert [int(r["group"]) for r in csv.DictReader(handle)] == [1, 1, 2, 2]
    with Image.open(sheet) as image:
        assert image.format == "JPEG" and image.width > 300


def test_list_file_and_glob_sources(planted, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{planted / 'poster0.jpg'}\n# a comment\n{planted / 'copy-exact.jpg'}\n")
    assert main(["duplicates", str(listing), str(planted / "poster7.jpg"), "--json"]) == 0
    assert [g["kind"] for g in json.loads(capsys.readouterr().out)] == ["exact"]
    assert main(["duplicates", str(planted / "copy-*.jpg"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{p}/poster0.jpg"], "at least two"),
        (["{p}/nothing.jpg", "{p}/poster0.jpg"], "no such file"),
        (["{p}", "--sheet", "{t}/sheet.gif"], "cannot write a contact sheet"),
        (["{p}", "--similarity", "1.5"], "expected a number from 0 to 1"),
        (["{p}", "--hash-distance", "65"], "expected a number of bits"),
        (["{t}/empty"], "no images found"),
    ],
)
def test_refusals_exit_2_with_one_line(planted, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(p=planted, t=tmp_path) for a in argv]
    try:
        code = main(["duplicates", *args])
    except SystemExit as exc:  # argparse refuses a bad option value itself
        code = exc.code
    assert code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "sheet.gif").exists()
