"""Shared fixtures: tiny generated posters, an isolated cache, and the real data when present."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(
    os.environ.get("POSTERGENRE_DATA", REPO.parent / "shared" / "data" / "imdb-posters-7k")
)
# Each genre of the tiny data set has its own dominant colour, so a model can learn it.
GENRE_COLOURS = {"Action": (200, 40, 30), "Comedy": (230, 210, 40), "Drama": (40, 60, 190)}


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_reaches_children():
    """A suite started as a background job (`make test &`) inherits an ignored SIGINT, and so
    would every process the tests start, which then cannot be interrupted the way a user's
    Ctrl+C interrupts them. Handling it here gives the children the default disposition."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Never touch the user's ~/.cache: every test session gets its own cache folder. Session
    scoped, so that module and session fixtures (trained runs, exports) use it too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POSTERGENRE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


def make_poster(
    path: Path, colour: tuple[int, int, int], seed: int = 0, size: tuple[int, int] = (40, 60)
) -> Path:
    """A small noisy poster of one dominant colour (width x height = size)."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.float64)
    pixels = base + rng.normal(0, 25, size=(size[1], size[0], 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def make_tiny_folder(root: Path, per_genre: tuple[int, int, int] = (8, 4, 4)) -> Path:
    """ROOT/{train,val,test}/{Action,Comedy,Drama}/*.png with 8/4/4 posters per genre (or
    `per_genre` posters in train, val and test)."""
    seed = 0
    for split, n in zip(("train", "val", "test"), per_genre, strict=True):
        for genre, colour in GENRE_COLOURS.items():
            for i in range(n):
                seed += 1
                make_poster(root / split / genre / f"{genre.lower()}{i}.png", colour, seed)
    return root


@pytest.fixture
def extras_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """`importlib.metadata` finds no installed distribution: how a missing extra looks."""
    from importlib import metadata

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """A fresh tiny poster folder per test (see `make_tiny_folder`)."""
    return make_tiny_folder(tmp_path / "posters")


@pytest.fixture(scope="session")
def tiny_posters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The `tiny_folder` posters made once, for the tests that only read them: the session cache
    then decodes and embeds them once, too. A test that writes into them fails the session."""
    root = make_tiny_folder(tmp_path_factory.mktemp("tiny") / "posters")
    before = folder_state(root)
    yield root
    assert folder_state(root) == before, "a test changed the shared tiny posters"


def folder_state(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under `root`: what a fixture shared by
    several tests compares at its end to prove that none of them wrote into it."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def make_card(
    arch: str = "seed-cnn",
    genres: tuple[str, ...] | list[str] = ("Action", "Comedy", "Drama"),
    task: str = "single",
    kind: str = "network",
    **fields,
):
    """A model card for `arch` with its registered input spec (thresholds 0.5 if multi)."""
    from postergenre.models import ModelCard, get_arch

    fields.setdefault("input", get_arch(arch).input)
    if task == "multi":
        fields.setdefault("thresholds", (0.5,) * len(genres))
    return ModelCard(architecture=arch, kind=kind, task=task, genres=tuple(genres), **fields)


def make_seed_bundle(
    directory: Path, genres: tuple[str, ...] = ("Action", "Comedy", "Drama"), **card_fields
):
    """An untrained (seeded) seed-cnn bundle: enough to test loading, predicting, exporting
    (`card_fields` go to `make_card`, e.g. task="multi")."""
    import torch

    from postergenre.models import create_model
    from postergenre.models.bundle import save_bundle

    torch.manual_seed(0)
    model = create_model("seed-cnn", len(genres))
    card_fields.setdefault("name", "seed")
    return save_bundle(directory, model, make_card("seed-cnn", genres, **card_fields))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real poster set in ../shared; tests that need it skip cleanly without it."""
    if not (SHARED_DATA / "train.csv").is_file():
        pytest.skip(f"shared poster data not found at {SHARED_DATA}")
    return SHARED_DATA
