# Everything a newcomer needs: `make run` (the sandbox demo) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install run dev test lint bench
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/payhook dev --sandbox

dev: $(VENV)/.installed
	$(BIN)/payhook dev

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python -m bench
