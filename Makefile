# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   – create .venv, install fastnst[dev,demo,all], run the offline demo
#   make test   – create .venv, install fastnst[dev,demo,all], lint and run the test suite
#   make serve  – the HTTP API and web page on http://127.0.0.1:8000 with the bundled styles
# torch==2.13.0 is installed first so pip takes the CPU wheel instead of pulling CUDA packages.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.fastnst-installed

.PHONY: setup demo test lint serve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev,demo,all]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/ruff check fastnst tests scripts
	$(BIN)/python -m pytest -q

serve: $(STAMP)
	$(BIN)/fastnst serve

lint: $(STAMP)
	$(BIN)/ruff check fastnst tests scripts

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache
