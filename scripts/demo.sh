#!/usr/bin/env bash
# `make demo`: predict with the bundled default model, then serve the web app.
set -euo pipefail
DATA=${1:-../shared/data/imdb-posters-7k}
PG=".venv/bin/postergenre"
echo "== The bundled default model =="
$PG models
echo
if [ -f "$DATA/splits.csv" ]; then
  echo "== Predicting three test posters from $DATA with the bundled imdb-20 model =="
  posters=$(awk -F, '{sub(/\r$/, "")} $2=="test"{print "'"$DATA"'/images/"$1".jpg"}' "$DATA/splits.csv" | head -n 3)
  # shellcheck disable=SC2086
  $PG predict $posters
  INDEX=runs/demo-index
  if [ ! -f "$INDEX/index.json" ]; then
    echo
    echo "== Indexing the training posters for similar-poster search (once; cached) =="
    $PG index --labels "$DATA/train.csv" --splits "$DATA/splits.csv" --images "$DATA/images" \
      --split train --out "$INDEX"
  fi
  echo
  exec $PG serve --index "$INDEX" --runtime onnx
else
  cat <<MSG
(The shared poster set was not found at $DATA: set DATA=... to use it.)
Predict your own posters:      $PG predict path/to/poster.jpg
Train on a folder per genre:   $PG train --folder path/to/posters --arch efficientnet-lite0 --out runs/mine
MSG
  echo
  exec $PG serve --runtime onnx
fi
