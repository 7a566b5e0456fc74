"""The bundled models on posters from elsewhere: another poster source, other decades.

Nothing is tuned here: every model predicts with its card's thresholds and calibration, and
the numbers are compared with the same models on the shared test split, over the genres both
label sets know.

The data (never in the repository; rebuild it with these commands):

- Posters: the public repository `PerceptiLabs/movie_genre` (commit 69e0b50), 17,962 JPEGs
  `posters/<imdb id>.jpg`, 182x268: the thumbnails of Kaggle's "Movie Genre from its Poster"
  URL list (`MovieGenre.csv`, IMDb's poster images as of 2017), kept there for the movies whose
  first IMDb genre (alphabetically) is Comedy or Drama; its `data.csv` holds only that one
  label. The shared set is another scrape (laxmimerit/Movies-Poster_Dataset, 300x444).
- Genres and years: MovieLens 25M (`ml-25m/links.csv` maps MovieLens to IMDb ids,
  `ml-25m/movies.csv` holds "Title (Year)" and MovieLens's genres `A|B`), GroupLens, 2019.
  MovieLens genres are not IMDb's: `Children`, `Film-Noir`, `IMAX` and `Western` have no
  counterpart in the models, and Biography, Family, History, Music and Sport have none in
  MovieLens, so the multi-label models are scored on the 15 genres both know.

    git clone https://github.com/PerceptiLabs/movie_genre            # posters
    # ml-25m.zip from the GroupLens site, unpacked to ml-25m/ (links.csv, movies.csv); the
    # public repository andead422/oop_project carries the same two files in ml-25m/
    python benchmarks/out_of_source.py build --posters movie_genre/posters \
        --movielens ml-25m --out elsewhere
    python benchmarks/out_of_source.py run --images elsewhere/images \
        --labels elsewhere/labels.csv --shared-movielens elsewhere/shared_movielens.csv \
        --sample 1200 --text-sample 100 --probabilities probs/   # BENCHMARKS.md, section 25

`build` writes `elsewhere/images/tt*.jpg` (hard links where it can), `labels.csv` (id, genres,
title, year, source_label) for the posters MovieLens labels and whose IMDb id is not in the
shared set, and `shared_movielens.csv` (the shared posters' MovieLens genres and years).
`run` draws a seeded sample (`--sample`), removes posters that `curation.duplicates` finds
to be the same image as a shared poster, predicts with every bundled model through
`Predictor`, and prints per model: mAP, micro / macro F1 at the card's thresholds and ECE
(accuracy, balanced accuracy and ECE for three-genre) with 95% bootstrap intervals, on the
shared test split (IMDb labels), on the shared test posters with MovieLens labels (the same
label source as the new posters), on the new posters, and by decade; the drops come with
intervals from independent bootstrap draws of both sets. The multi-label models are scored
again over the genres with at least 20 posters in every set (a rare genre's AP is low by
construction), and a table gives each genre's AP and positives per set. `--probabilities`
keeps the predictions, so a run stopped on a loaded machine goes on where it was, and
`--cached-only` scores what is stored without predicting. `imdb-20-text` reads every poster
by OCR (about 1 s each), so it is scored on `--text-sample` posters of each set only, beside
`imdb-20` on the same posters.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from _common import print_table, require_data, write_result
from _weighted import BOOT, Scored

from postergenre.atomic import atomic_folder, atomic_path
from postergenre.data.labels import load_posters
from postergenre.data.records import PosterRecord
from postergenre.data.targets import encode_targets

MIN_POSITIVES = 20  # a genre counts in the common-genre rows with this many in every set
CHUNK = 200  # posters predicted between two saves of the probabilities
CACHED_ONLY = False  # --cached-only: score the posters whose probabilities are stored
THREE = ["Action", "Comedy", "Drama"]
ERAS = [("before 1960", 0, 1959), ("1960-1979", 1960, 1979), ("1980-1999", 1980, 1999),
        ("2000 on", 2000, 2100)]  # fmt: skip
YEAR = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")


# -- build ------------------------------------------------------------------------------------
def read_movielens(folder: Path) -> dict[int, tuple[str, int | None, list[str]]]:
    """IMDb id -> (title, year, MovieLens genres) from ml-25m's links.csv and movies.csv."""
    with open(folder / "links.csv", newline="", encoding="utf-8") as f:
        imdb = {row["movieId"]: int(row["imdbId"]) for row in csv.DictReader(f) if row["imdbId"]}
    out = {}
    with open(folder / "movies.csv", newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:  # one row of ml-25m has an unquoted comma in its title
            movie, title, genres = row[0], ",".join(row[1:-1]), row[-1]
            if movie not in imdb or genres == "(no genres listed)":
                continue
            match = YEAR.search(title)
            out[imdb[movie]] = (title, int(match.group(1)) if match else None, genres.split("|"))
    return out


def shared_ids(data: Path) -> set[int]:
    with open(data / "train.csv", newline="", encoding="utf-8") as f:
        return {int(row["Id"].removeprefix("tt")) for row in csv.DictReader(f)}


def build(posters: Path, movielens: Path, out: Path) -> None:
    """The labelled folder of posters from elsewhere (see the module docstring)."""
    labels = read_movielens(movielens)
    shared = shared_ids(require_data())
    source_label = {}
    if (posters.parent / "data.csv").is_file():
        with open(posters.parent / "data.csv", newline="") as f:
            source_label = {Path(r["images"]).stem: r["labels"] for r in csv.DictReader(f)}
    files = sorted(posters.glob("*.jpg"))
    counts = Counter()
    with atomic_folder(out) as tmp:
        (tmp / "images").mkdir()
        with open(tmp / "labels.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "genres", "title", "year", "source_label"])
            for path in files:
                number = int(path.stem)
                if number in shared:
                    counts["in the shared set (same IMDb id)"] += 1
                    continue
                if number not in labels:
                    counts["no MovieLens genres"] += 1
                    continue
                title, year, genres = labels[number]
                poster_id = f"tt{number:07d}"
                target = tmp / "images" / f"{poster_id}.jpg"
                try:
                    os.link(path, target)
                except OSError:
                    shutil.copyfile(path, target)
                writer.writerow([poster_id, "|".join(genres), title, year or "",
                                 source_label.get(path.stem, "")])  # fmt: skip
                counts["kept"] += 1
        with open(tmp / "shared_movielens.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "genres", "title", "year"])
            for number in sorted(shared & labels.keys()):
                title, year, genres = labels[number]
                writer.writerow([f"tt{number:07d}", "|".join(genres), title, year or ""])
    print(f"{len(files):,} posters: {dict(counts)}; wrote {out}")


# -- scoring ----------------------------------------------------------------------------------
def read_years(path: Path) -> dict[str, int]:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["id"]: int(r["year"]) for r in csv.DictReader(f) if r.get("year")}


def not_in_shared(records: list[PosterRecord], shared: list[PosterRecord]) -> tuple[list, int]:
    """`records` less those that duplicate detection groups with a shared poster (and all but
    one of each group of their own), and how many were removed."""
    from postergenre.curation.duplicates import find_duplicates

    mine = {str(r.path.resolve()): r for r in records}
    theirs = {str(r.path.resolve()) for r in shared}
    groups = find_duplicates([r.path for r in shared] + [r.path for r in records], progress=True)
    drop = set()
    for group in groups:
        paths = [m.path for m in group.members]
        ours = [p for p in paths if p in mine]
        drop.update(ours if any(p in theirs for p in paths) else ours[1:])
    return [r for key, r in mine.items() if key not in drop], len(drop)


def probabilities(
    predictor: Any, name: str, paths: list[Path], store: Path | None, cached_only: bool = False
) -> dict:
    """Path -> probability row of every readable poster of `paths`; with `store`, the rows
    are kept in `store/NAME.npz` and only posters not there yet are predicted (a run on a
    loaded machine can stop and go on); `cached_only`: predict nothing, use what is there."""
    rows: dict[Path, np.ndarray] = {}
    saved = store / f"{name}.npz" if store is not None else None
    if saved is not None and saved.is_file():
        with np.load(saved) as kept:
            rows = {Path(p): r for p, r in zip(kept["paths"], kept["probs"], strict=True)}
    if cached_only:
        return {p: rows[p] for p in paths if p in rows}
    # in a seeded random order, so a run stopped early leaves a random part of every set
    missing = [p for p in paths if p not in rows]
    missing = [missing[i] for i in np.random.default_rng(0).permutation(len(missing))]
    for start in range(0, len(missing), CHUNK):
        chunk = missing[start : start + CHUNK]
        done = predictor.predict(chunk, progress_bar=True, cache=predictor.card.reads_text)
        rows.update({Path(p): r for p, r in zip(done.paths, done.probabilities, strict=True)})
        if saved is not None:
            with atomic_path(saved) as tmp, open(tmp, "wb") as f:
                paths_kept = np.array([str(p) for p in rows])
                np.savez(f, paths=paths_kept, probs=np.stack(list(rows.values())))
    return rows


def score_sets(
    predictor: Any, name: str, sets: dict, genres: list[str], task: str, store: Path | None
) -> dict:
    """`sets` name -> records; predicts each poster once and scores it over `genres`."""
    paths = sorted({r.path for records in sets.values() for r in records})
    found = probabilities(predictor, name, paths, store, CACHED_ONLY)
    index = {p: i for i, p in enumerate(found)}
    columns = [list(predictor.genres).index(g) for g in genres]
    full = np.stack(list(found.values()))
    out = {}
    for seed, (label, records) in enumerate(sets.items()):
        targets = encode_targets([r for r in records if r.path in index], genres, task)
        rows = [index[r.path] for r in targets.records]
        probs = full[rows][:, columns]
        if task == "single":
            probs = probs / probs.sum(1, keepdims=True)
            predicted = probs.argmax(1)
        else:
            predicted = predictor.card.decide(full[rows])[:, columns]
        out[label] = Scored(task, targets.y, probs, predicted, BOOT, seed)
    return out


def relabel(records: list[PosterRecord], genres: dict[str, list[str]]) -> list[PosterRecord]:
    """The posters of `records` that `genres` (id -> genres) labels, with those genres."""
    return [PosterRecord(r.id, r.path, tuple(genres[r.id]), r.split)
            for r in records if r.id in genres]  # fmt: skip


def by_era(records: list[PosterRecord], years: dict[str, int]) -> dict[str, list]:
    eras = {}
    for name, low, high in ERAS:
        chosen = [r for r in records if low <= years.get(r.id, -1) <= high]
        if len(chosen) >= 50:
            eras[name] = chosen
    return eras


def one_of_three(records: list[PosterRecord]) -> list[PosterRecord]:
    """Posters with exactly one of Action, Comedy, Drama, labelled with it (the article's task)."""
    out = []
    for r in records:
        hits = [g for g in r.genres if g in THREE]
        if len(hits) == 1:
            out.append(PosterRecord(r.id, r.path, (hits[0],), r.split))
    return out


def model_sets(
    predictor: Any, test: list, three_test: list, sample: list, ml_shared: dict
) -> tuple[list[str], str, dict[str, list[PosterRecord]]]:
    """The genres a model is scored on, its task, and its sets of posters."""
    if predictor.task == "single":
        sets = {"shared test (IMDb)": three_test,
                "shared test (MovieLens)": one_of_three(relabel(test, ml_shared)),
                "elsewhere": one_of_three(sample)}  # fmt: skip
        return THREE, "single", sets
    vocabulary = {g for r in sample for g in r.genres}
    genres = [g for g in predictor.genres if g in vocabulary]
    sets = {"shared test (IMDb)": test, "shared test (MovieLens)": relabel(test, ml_shared),
            "elsewhere": sample}  # fmt: skip
    return genres, "multi", sets


def table_rows(scored: dict[str, Scored]) -> list[dict]:
    """One row per set; every set after the first also carries its drop from the first."""
    base = next(iter(scored.values()))
    return [value.row(key, None if value is base else base) for key, value in scored.items()]


def common_genre_rows(
    predictor: Any, name: str, sets: dict, genres: list[str], per_genre: dict, store: Path | None
) -> list[dict]:
    """The main sets again over the genres with at least MIN_POSITIVES posters in every one
    of them: rare genres' AP is low by construction (its floor is the prevalence), so
    this separates a change of genre mix from a change of skill."""
    support = [{r["genre"]: r["support"] for r in rows} for rows in per_genre.values()]
    common = [g for g in genres if all(s.get(g, 0) >= MIN_POSITIVES for s in support)]
    main = {f"{k}, {len(common)} genres": sets[k] for k in per_genre}
    rows = table_rows(score_sets(predictor, name, main, common, "multi", store))
    return [{**row, "model": name, "genres": common} for row in rows]


def print_rows(rows: list[dict], task: str) -> None:
    first = "accuracy" if task == "single" else "map"
    keys = [first, "balanced_accuracy"] if task == "single" else [first, "micro_f1", "macro_f1"]
    columns = ["model", "set", "posters"]
    for key in [*keys, "ece"]:
        columns += [key, f"{key}_95", f"{key}_drop", f"{key}_drop_95"]
    print_table(rows, columns)


def print_per_genre(per_genre: dict[str, list[dict]]) -> None:
    """AP (or recall, single-label) and posters of each genre in each main set, side by side."""
    names = list(per_genre)
    genres = [r["genre"] for r in per_genre[names[0]]]
    lookup = {k: {r["genre"]: r for r in v} for k, v in per_genre.items()}
    key = "ap" if "ap" in per_genre[names[0]][0] else "recall"
    score = "AP" if key == "ap" else "recall"
    rows = []
    for genre in genres:
        row = {"genre": genre}
        for k in names:
            hit = lookup[k].get(genre)
            row[f"{k} {score}"] = hit[key] if hit else None
            row[f"{k} n"] = hit["support"] if hit else 0
        rows.append(row)
    print()
    print_table(rows, ["genre"] + [f"{k} {c}" for k in names for c in (score, "n")])


def run(args: argparse.Namespace) -> None:
    from postergenre._allocator import tune_allocator
    from postergenre.inference import Predictor

    tune_allocator()
    data = require_data()
    shared = load_posters(labels=data / "train.csv", images=data / "images",
                          splits=data / "splits.csv").records  # fmt: skip
    test = [r for r in shared if r.split == "test"]
    three_test = load_posters(labels=data / "three_genre.csv",
                              images=data / "images").split("test").records  # fmt: skip
    elsewhere = load_posters(labels=args.labels, images=args.images).records
    years = read_years(args.labels)
    ml_shared = {}
    if args.shared_movielens:
        years.update(read_years(args.shared_movielens))
        with open(args.shared_movielens, newline="", encoding="utf-8") as f:
            ml_shared = {r["id"]: r["genres"].split("|") for r in csv.DictReader(f)}
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(elsewhere))[: args.sample]
    sample = sorted((elsewhere[i] for i in order), key=lambda r: r.id)
    sample, removed = not_in_shared(sample, shared)
    print(f"{len(sample):,} posters from elsewhere ({removed} removed as the same image as a "
          f"shared poster or as each other)")  # fmt: skip
    eras = Counter(name for name, low, high in ERAS for r in sample
                   if low <= years.get(r.id, -1) <= high)  # fmt: skip
    summary = {"posters": len(sample), "removed_as_duplicates": removed, "eras": dict(eras),
               "genre_counts": dict(Counter(g for r in sample for g in r.genres))}  # fmt: skip
    results = {}
    text_n = args.text_sample
    text_sets = {
        "shared test (IMDb)": [test[i] for i in rng.permutation(len(test))[:text_n]],
        "elsewhere": [sample[i] for i in rng.permutation(len(sample))[:text_n]],
    }
    for name in args.models.split(","):
        predictor = Predictor.from_pretrained(name)
        genres, task, sets = model_sets(predictor, test, three_test, sample, ml_shared)
        if predictor.card.reads_text:
            sets = dict(text_sets)
        else:
            for where in ("shared test", "elsewhere"):
                pool = sets["shared test (IMDb)" if where == "shared test" else "elsewhere"]
                sets.update({f"{where}, {e}": v for e, v in by_era(pool, years).items()})
        scored = score_sets(predictor, name, sets, genres, task, args.probabilities)
        rows = [{**row, "model": name} for row in table_rows(scored)]
        per_genre = {}
        if predictor.card.reads_text:  # the same posters through imdb-20, to pair with
            plain = score_sets(Predictor.from_pretrained("imdb-20"), "imdb-20", text_sets, genres,
                               task, args.probabilities)  # fmt: skip
            rows += [{**row, "model": "imdb-20 (same posters)"} for row in table_rows(plain)]
        else:
            per_genre = {k: scored[k].per_genre(genres) for k in list(scored)[:3]}
        if task == "multi" and per_genre:
            rows += common_genre_rows(predictor, name, sets, genres, per_genre, args.probabilities)
        left_out = sorted(set(predictor.genres) - set(genres))
        results[name] = {"genres": genres, "left_out": left_out, "rows": rows,
                         "per_genre": per_genre}  # fmt: skip
        print(f"\n{name}: scored on {len(genres)} genres; left out {', '.join(left_out) or '-'}")
        print_rows(rows, task)
        if per_genre:
            print_per_genre(per_genre)
    path = write_result(args.name, {"data": summary, "bootstrap": BOOT, "models": results,
                                    "sample": args.sample, "seed": args.seed})  # fmt: skip
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="make the labelled folder of posters from elsewhere")
    b.add_argument("--posters", type=Path, required=True, help="movie_genre/posters")
    b.add_argument("--movielens", type=Path, required=True, help="ml-25m folder")
    b.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run", help="score every bundled model there and on the shared test")
    r.add_argument("--images", type=Path, required=True)
    r.add_argument("--labels", type=Path, required=True)
    r.add_argument("--shared-movielens", type=Path, help="shared_movielens.csv from build")
    r.add_argument("--models", default="imdb-20,imdb-20-fast,three-genre,imdb-20-text")
    r.add_argument("--sample", type=int, default=2000, help="posters from elsewhere to score")
    r.add_argument("--text-sample", type=int, default=200, help="posters per set for OCR")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--probabilities", type=Path, help="keep and reuse predictions here")
    r.add_argument("--cached-only", action="store_true",
                   help="predict nothing; score the posters --probabilities holds")  # fmt: skip
    r.add_argument("--name", default="out_of_source")
    args = parser.parse_args()
    global CACHED_ONLY
    CACHED_ONLY = getattr(args, "cached_only", False)
    if args.command == "build":
        build(args.posters, args.movielens, args.out)
    else:
        run(args)


if __name__ == "__main__":
    main()
