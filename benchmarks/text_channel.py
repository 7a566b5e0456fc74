"""Does the poster's own text help? OCR text as character n-grams, fused with image features.

Reads every shared poster's OCR text through the library's text cache (computing what is
missing, 2 worker processes) and the image features of runs/ensemble-features.npz. For each
task (20-genre mAP; three-genre balanced accuracy):
- `image`: the class-balanced logistic regression on the image features (C chosen on val);
- `text`: the same on TF-IDF character 2-4-grams of the OCR text alone;
- `image+text`: the image features plus the 20 (or 3) text-model logits, the training posters'
  logits taken out of fold (5 folds) so the fused model does not trust memorised text.
The gain of `image+text` over `image` gets a paired bootstrap interval over the val posters
(it decides) and over the test posters (reported), and test scores are split by how many words
OCR found.

    python benchmarks/text_channel.py [--features "lite0+1+2 avg"] [--name text_channel]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import print_table, require_data, write_result
from ensemble_probe import FEATURES, feature_set, fit, paired_bootstrap, score, split_data
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from sklearn.multiclass import OneVsRestClassifier

from postergenre.data.text import PosterText
from postergenre.models.efficientnet_lite import portrait_input

FOLDS = 5
TEXT_C = (0.3, 1.0, 3.0, 10.0)


def read_texts(ids: np.ndarray) -> tuple[list[str], float]:
    images = require_data() / "images"
    paths = [images / f"{i}.jpg" for i in ids]
    started = time.perf_counter()
    texts, errors = PosterText(None, portrait_input("lite0")).load(paths, workers=2)
    if errors:
        raise SystemExit(f"{len(errors)} posters could not be read")
    return [t or "" for t in texts], time.perf_counter() - started


def text_model(task: str, c: float):
    base = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    return base if task == "three" else OneVsRestClassifier(base, n_jobs=2)


def logits(model, x) -> np.ndarray:
    z = model.decision_function(x)
    return z if z.ndim == 2 else z[:, None]


def text_logits(task: str, texts: dict[str, list[str]], y: dict[str, np.ndarray]):
    """Text-only scores and the text logits used for fusion (train out of fold)."""
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=3,
                                 sublinear_tf=True, lowercase=True)  # fmt: skip
    x = {"train": vectorizer.fit_transform(texts["train"])}
    x.update({k: vectorizer.transform(texts[k]) for k in ("val", "test")})
    best = None
    for c in TEXT_C:
        model = text_model(task, c).fit(x["train"], y["train"])
        val = score(task, y["val"], model.predict_proba(x["val"]))
        if best is None or val > best[0]:
            best = (val, c, model)
    assert best is not None
    _, c, model = best
    out = {k: logits(model, x[k]) for k in ("val", "test")}
    probs = {k: model.predict_proba(x[k]) for k in ("val", "test")}
    oof = np.zeros((len(y["train"]), out["val"].shape[1]))
    for fold_train, fold_out in KFold(FOLDS, shuffle=True, random_state=0).split(x["train"]):
        fold = text_model(task, c).fit(x["train"][fold_train], y["train"][fold_train])
        oof[fold_out] = logits(fold, x["train"][fold_out])
    out["train"] = oof
    return c, probs, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="lite0+1+2 avg")
    parser.add_argument("--tasks", default="imdb20,three")
    parser.add_argument("--name", default="text_channel")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    started = time.perf_counter()
    features = np.load(FEATURES)
    ids = features["ids"]
    texts_all, ocr_seconds = read_texts(ids)
    words_all = np.array([len(t.replace("|", " ").split()) for t in texts_all])
    columns = feature_set(features, args.features)
    rows, groups = [], []
    for task in args.tasks.split(","):
        data = split_data(task, ids)
        y = {k: v[1] for k, v in data.items()}
        texts = {k: [texts_all[i] for i in v[0]] for k, v in data.items()}
        x = {k: columns[v[0]] for k, v in data.items()}
        _, image = fit(task, x, y)
        c_text, text_probs, z_text = text_logits(task, texts, y)
        scale = x["train"].std() / max(z_text["train"].std(), 1e-6)
        fused_x = {k: np.hstack([x[k], z_text[k] * scale]) for k in x}
        _, fused = fit(task, fused_x, y)
        for name, probs in (("image", image), ("text", text_probs), ("image+text", fused)):
            row = {"task": task, "model": name, "val": score(task, y["val"], probs["val"]),
                   "test": score(task, y["test"], probs["test"])}  # fmt: skip
            if name == "image+text":
                for split in ("val", "test"):
                    low, high = paired_bootstrap(task, y[split], fused[split], image[split])
                    row[f"{split}_gain_low"], row[f"{split}_gain_high"] = low, high
            if name == "text":
                row["text_C"] = c_text
            rows.append(row)
        words = words_all[data["test"][0]]
        cut = int(np.median(words))
        for label, mask in ((f"<= {cut} words", words <= cut), (f"> {cut} words", words > cut)):
            groups.append({
                "task": task, "test posters": label, "n": int(mask.sum()),
                "image": score(task, y["test"][mask], image["test"][mask]),
                "image+text": score(task, y["test"][mask], fused["test"][mask]),
            })  # fmt: skip
    print_table(rows, ["task", "model", "val", "test", "val_gain_low", "val_gain_high",
                       "test_gain_low", "test_gain_high", "text_C"])  # fmt: skip
    print()
    print_table(groups, ["task", "test posters", "n", "image", "image+text"])
    payload = {
        "features": args.features,
        "rows": rows,
        "by_words": groups,
        "ocr": {
            "posters": len(ids),
            "seconds_this_run": round(ocr_seconds, 1),
            "median_words": float(np.median(words_all)),
            "share_without_text": float((words_all == 0).mean()),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
