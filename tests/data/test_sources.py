"""Poster sources: folders, globs, lists and label CSVs as poster paths, whatever the file system
holds (links back up the tree, link loops, names too long for it)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from postergenre.data.decode import decode_poster
from postergenre.data.sources import find_posters
from postergenre.errors import PosterDecodeError, UserError

LONG_NAME = "a" * 300 + ".jpg"


@pytest.fixture
def tree(tmp_path, save_image, monkeypatch):
    """root/a.jpg, root/sub/b.jpg, a link back up (root/sub/up -> ..), a second name for sub
    (root/again -> sub) and a link to a folder outside (root/outside -> ../elsewhere)."""
    save_image(tmp_path / "root" / "a.jpg")
    save_image(tmp_path / "root" / "sub" / "b.jpg")
    save_image(tmp_path / "elsewhere" / "c.jpg")
    os.symlink("..", tmp_path / "root" / "sub" / "up")
    os.symlink("sub", tmp_path / "root" / "again")
    os.symlink("../elsewhere", tmp_path / "root" / "outside")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_folder_walk_visits_each_real_folder_once_and_keeps_the_paths_given(tree):
    paths = find_posters("root").paths
    # `again` sorts before `sub`, so the poster in sub is reached first through that name
    assert paths == [Path("root/a.jpg"), Path("root/again/b.jpg"), Path("root/outside/c.jpg")]


def test_a_folder_walk_through_a_link_loop_ends_at_once(tmp_path, save_image):
    save_image(tmp_path / "loop" / "x" / "p.jpg")
    os.symlink("../y", tmp_path / "loop" / "x" / "to_y")
    os.makedirs(tmp_path / "loop" / "y")
    os.symlink("../x", tmp_path / "loop" / "y" / "to_x")
    started = time.perf_counter()
    paths = find_posters(tmp_path / "loop").paths
    assert paths == [tmp_path / "loop" / "x" / "p.jpg"]
    assert time.perf_counter() - started < 30  # a guard against walking in circles, not a speed


def test_a_recursive_glob_visits_each_real_folder_once(tree):
    started = time.perf_counter()
    paths = find_posters("root/**/*.jpg").paths
    assert time.perf_counter() - started < 30  # a guard against walking in circles, not a speed
    assert sorted(p.name for p in paths) == ["a.jpg", "b.jpg", "c.jpg"]
    assert all(not p.is_absolute() and p.parts[0] == "root" for p in paths)


def test_globs_still_match_as_before(tree, save_image):
    save_image(tree / "root" / ".hidden.jpg")
    save_image(tree / "root" / "sub" / "deeper" / "d.png")
    assert find_posters("root/*.jpg").paths == [Path("root/a.jpg")]
    assert [p.name for p in find_posters("root/**/*.png").paths] == ["d.png"]
    assert [p.name for p in find_posters("root/s?b/*").paths] == ["b.jpg"]
    with pytest.raises(UserError, match="no images match"):
        find_posters("root/*.gif")


@pytest.fixture
def bad_links(tmp_path, save_image, monkeypatch):
    """A folder with one good poster, a link loop (loop_a.jpg <-> loop_b.jpg) and a dangling
    link (gone.jpg)."""
    folder = tmp_path / "links"
    save_image(folder / "good.jpg")
    os.symlink("loop_b.jpg", folder / "loop_a.jpg")
    os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    os.symlink("nothing_here.jpg", folder / "gone.jpg")
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize(
    ("name", "reason"), [("loop_a.jpg", "is a symlink loop"), ("gone.jpg", "not found")]
)
def test_a_single_poster_that_is_a_bad_link_is_refused_in_one_line(bad_links, name, reason):
    with pytest.raises(UserError, match=reason) as caught:
        find_posters(name)
    assert "\n" not in caught.value.one_line()
    with pytest.raises(PosterDecodeError, match=f"^{name}: .*{reason}"):
        decode_poster(name)


def test_bad_links_in_a_folder_are_listed_so_reading_them_says_why(bad_links):
    paths = find_posters(bad_links).paths
    assert [p.name for p in paths] == ["gone.jpg", "good.jpg", "loop_a.jpg", "loop_b.jpg"]
    reasons = {}
    for path in paths:
        try:
            decode_poster(path)
        except PosterDecodeError as exc:
            reasons[path.name] = str(exc)
    assert sorted(reasons) == ["gone.jpg", "loop_a.jpg", "loop_b.jpg"]
    assert "symlink loop" in reasons["loop_a.jpg"] and "not found" in reasons["gone.jpg"]


def test_a_path_too_long_or_with_a_nul_byte_is_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match="too long"):
        find_posters(tmp_path / LONG_NAME)
    with pytest.raises(UserError, match="NUL"):
        find_posters(str(tmp_path / "a\0b.jpg"))


def test_a_list_of_paths_too_long_or_with_a_nul_byte_skips_them_with_a_reason(tmp_path, save_image):
    save_image(tmp_path / "good.jpg")
    listing = tmp_path / "posters.txt"
    listing.write_text(f"good.jpg\n{'d/' * 2500}x.jpg\nnul\0byte.jpg\n~nosuchuser/x.jpg\n")
    paths = find_posters(listing).paths
    assert len(paths) == 4
    decode_poster(paths[0])
    for path, reason in zip(paths[1:], ["too long", "NUL", "not found"], strict=True):
        with pytest.raises(PosterDecodeError, match=reason):
            decode_poster(path)


def test_a_label_csv_id_too_long_for_a_file_name_is_a_poster_that_says_why(tmp_path, save_image):
    save_image(tmp_path / "images" / "tt1.jpg")
    (tmp_path / "labels.csv").write_text(f"id,genre\ntt1,Drama\n{'x' * 300},Comedy\n")
    paths = find_posters(tmp_path / "labels.csv").paths
    assert paths[0].name == "tt1.jpg"
    with pytest.raises(PosterDecodeError, match="file name too long"):
        decode_poster(paths[1])
