# visionkit — every target does its own set-up from a fresh clone (idempotent, fast when done).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BENCH_VENV := .venv-bench
STAMP := $(VENV)/.installed
BENCH_STAMP := $(BENCH_VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint bench setup bench-setup clean

$(STAMP): pyproject.toml setup.py constraints.txt $(wildcard src/visionkit/ops/_native/*)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/visionkit demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# The reference environment: torchvision + pycocotools + faster-coco-eval beside a newer torch.
$(BENCH_STAMP): pyproject.toml setup.py constraints-bench.txt $(wildcard src/visionkit/ops/_native/*)
	test -x $(BENCH_VENV)/bin/python || $(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q -c constraints-bench.txt torch torchvision faster-coco-eval
	$(BENCH_VENV)/bin/python -m pip install -q -c constraints-bench.txt -e '.[dev]'
	touch $(BENCH_STAMP)

bench-setup: $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BENCH_VENV)/bin/python $$f || exit 1; done

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .ruff_cache .mypy_cache
