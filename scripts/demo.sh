#!/usr/bin/env bash
# `make demo`: reproduce the article's pipeline end to end on the shared posters.
set -euo pipefail
DATA=${1:-../shared/data/imdb-posters-7k}
PG=".venv/bin/postergenre"
if [ ! -f "$DATA/three_genre.csv" ]; then
  cat <<MSG
The shared poster set was not found at $DATA.
Point PosterGenre at your own posters instead, e.g. a folder per genre:
  $PG train --folder path/to/posters --arch seed-cnn --out runs/mine
  $PG predict --model runs/mine path/to/poster.jpg
(or set DATA=... for 'make demo'; see README.md for the label-file formats)
MSG
  exit 0
fi
RUN=runs/demo-seed-cnn
rm -rf "$RUN"
echo "== Training the article's CNN briefly (3 epochs) on Action/Comedy/Drama =="
$PG train --labels "$DATA/three_genre.csv" --images "$DATA/images" --arch seed-cnn \
  --genres Action,Comedy,Drama --epochs 3 --out "$RUN"
echo
echo "== Evaluating on the balanced 450-poster test split =="
$PG evaluate --model "$RUN" --labels "$DATA/three_genre.csv" --images "$DATA/images" \
  --split test --out "$RUN/eval-test"
echo
echo "== Predicting a few test posters =="
posters=$(awk -F, '$3=="test"{print "'"$DATA"'/images/"$1".jpg"}' "$DATA/three_genre.csv" | head -n 3)
# shellcheck disable=SC2086
$PG predict --model "$RUN" $posters
echo
echo "Plots: $RUN/plots/training_curves.png, $RUN/eval-test/confusion_matrix.png"
