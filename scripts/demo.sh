#!/usr/bin/env bash
# `make demo`: predict with the bundled default model, then serve the web app (indexing the
# training posters for similar-poster search in the background).
#   scripts/demo.sh [DATA]   (environment: PORT, default 8000; HOST, optional; PG, the CLI to
#                            run, default .venv/bin/postergenre: tests point it at a stub)
set -euo pipefail
DATA=${1:-${DATA:-../shared/data/imdb-posters-7k}}
PG=${PG:-.venv/bin/postergenre}
PORT=${PORT:-8000}
HOST=${HOST:-}
serve_args=(--port "$PORT")
if [ -n "$HOST" ]; then serve_args+=(--host "$HOST"); fi

# Serve in the foreground (not `exec`) so a failure can say what to do next. Ctrl+C still
# works: the server stops on SIGINT and so does this script (bash waits for it, then exits).
serve() {
  local rc=0
  "$PG" serve "$@" "${serve_args[@]}" || rc=$?
  # 130/143: stopped by Ctrl+C or kill, which is no failure to explain.
  if [ "$rc" != 0 ] && [ "$rc" != 130 ] && [ "$rc" != 143 ]; then
    local other=8001
    if [[ $PORT =~ ^[0-9]{1,5}$ ]] && ((10#$PORT > 0 && 10#$PORT < 65535)); then
      other=$((10#$PORT + 1))
    fi
    echo "If port $PORT is busy, choose another port: make demo PORT=$other" >&2
  fi
  return "$rc"
}

echo "== The bundled default model =="
"$PG" models
echo
if [ -f "$DATA/splits.csv" ]; then
  echo "== Predicting three test posters from $DATA with the bundled imdb-20 model =="
  # awk stops by itself after the third poster: no `| head`, whose early exit would kill awk
  # with SIGPIPE and, under pipefail, the whole demo (exit 141).
  list=$(DATA="$DATA" awk -F, '{sub(/\r$/, "")}
    $2 == "test" { print ENVIRON["DATA"] "/images/" $1 ".jpg"; if (++n == 3) exit }' \
    "$DATA/splits.csv")
  if [ -n "$list" ]; then
    mapfile -t posters <<<"$list"
    "$PG" predict "${posters[@]}"
  else
    echo "(no test posters listed in $DATA/splits.csv)"
  fi
  echo
  echo "== Serving; similar posters once the training posters are indexed (in the background) =="
  # The page is up at once; the index is built in runs/demo-index while it is (the first time
  # takes minutes; later runs reuse it and embed only what changed), and the page shows how
  # far it is. --collection: the indexed posters can then be reviewed at /collection.
  serve --index runs/demo-index --labels "$DATA/train.csv" --splits "$DATA/splits.csv" \
    --images "$DATA/images" --split train --collection
else
  cat <<MSG
(The shared poster set was not found at $DATA: set DATA=... to use it.)
Predict your own posters:      $PG predict path/to/poster.jpg
Train on a folder per genre:   $PG train --folder path/to/posters --out runs/mine
Review a folder of posters:    $PG serve --collection path/to/posters
MSG
  echo
  serve
fi
