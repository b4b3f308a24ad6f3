# Every target bootstraps the virtualenv by itself: a fresh machine needs only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench simulate clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)          ## The whole system live: embedded NATS, the exchange, workers, auctions; prints the dashboard's address.
	$(BIN)/exchange demo auction

test: $(STAMP)          ## Lint, type-check and the whole test suite (what CI runs).
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

simulate: $(STAMP)
	$(BIN)/exchange simulate

bench: $(STAMP)
	$(BIN)/python bench/core.py

clean:
	rm -rf $(VENV) .exchange .pytest_cache .mypy_cache .ruff_cache
