# simcharge — see README.md. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
export SIMCHARGE_DATABASE_URL ?= sqlite+aiosqlite:///var/simcharge.db
export SIMCHARGE_BASE_URL ?= http://127.0.0.1:$(PORT)
PYTEST_WORKERS ?= auto

.PHONY: run test lint bench install demo migrate clean format

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

migrate: $(STAMP)
	$(BIN)/simcharge db upgrade

demo: migrate
	$(BIN)/simcharge demo

run: demo
	PORT=$(PORT) $(BIN)/simcharge serve --port $(PORT)

test: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
