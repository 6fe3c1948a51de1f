# simcharge — see README.md. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A variable as `.env` sets it (the last line naming it; `export `, quotes and a trailing
# ` # comment` as python-dotenv reads them), empty when it does not: what `simcharge serve` and
# the settings read after the environment, so that `make run` says and serves the same.
dotenv = $(shell [ -f .env ] && sed -n -E 's/^[[:space:]]*(export[[:space:]]+)?$(1)[[:space:]]*=[[:space:]]*//p' .env \
  | tail -n 1 | sed -E -e "s/^'([^']*)'.*/\1/;t" -e 's/^"([^"]*)".*/\1/;t' -e 's/[[:space:]]+\#.*//;s/[[:space:]]+$$//')
# The port: the command line's or the environment's, else `.env`'s, else 8000. `.env`'s only if
# it is a port number: the recipe below writes it into a command line, where anything else in a
# data file (`PORT=8000;curl …|sh`) would run.
PORT ?= $(or $(shell printf '%s\n' '$(subst ','',$(call dotenv,PORT))' | grep -E '^[0-9]{1,5}$$'),8000)
export SIMCHARGE_DATABASE_URL ?= sqlite+aiosqlite:///var/simcharge.db
export SIMCHARGE_BASE_URL ?= $(or $(call dotenv,SIMCHARGE_BASE_URL),http://127.0.0.1:$(PORT))
PYTEST_WORKERS ?= auto
# The 25 slowest tests, printed after the summary: where the suite's time goes.
PYTEST_ARGS ?= --durations=25

.PHONY: run test lint bench chaos install demo migrate clean format messages
LOCALES := src/simcharge/locales
LANGS := zh_Hans zh_Hant fil es

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# axe-core for the browser tests (npm, pinned by package-lock.json); skipped without npm.
NODE_STAMP := node_modules/.installed
$(NODE_STAMP): package.json package-lock.json
	if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund && touch $(NODE_STAMP); fi

install: $(STAMP) $(NODE_STAMP)

migrate: $(STAMP)
	$(BIN)/simcharge db upgrade

demo: migrate
	$(BIN)/simcharge demo

# The demo's sandbox sends each webhook three times, up to 2 s late and out of order, so that
# duplicates and reordering are part of every demo (settings in the environment win).
SANDBOX_DEMO := SIMCHARGE_SANDBOX_WEBHOOK_COPIES=$${SIMCHARGE_SANDBOX_WEBHOOK_COPIES:-3} \
	SIMCHARGE_SANDBOX_WEBHOOK_MAX_DELAY_SECONDS=$${SIMCHARGE_SANDBOX_WEBHOOK_MAX_DELAY_SECONDS:-2}

run: demo
	$(SANDBOX_DEMO) PORT=$(PORT) $(BIN)/simcharge serve --port $(PORT)

test: $(STAMP) $(NODE_STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench chaos
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench chaos

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Two web processes and two workers on PostgreSQL under SIGKILLs and a PostgreSQL restart; then
# every promise is checked (see chaos/__main__.py). Needs a local PostgreSQL cluster.
chaos: $(STAMP)
	$(BIN)/python -m chaos $(CHAOS_ARGS)

# Re-extract translatable strings and merge them into every catalog (then translate the new ones).
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k N_ -k translate:2 -k translate_plural:2,3 --no-wrap \
	  --sort-by-file --omit-header -o $(LOCALES)/messages.pot src/simcharge
	for l in $(LANGS); do \
	  if [ -f $(LOCALES)/$$l/LC_MESSAGES/messages.po ]; then \
	    $(BIN)/pybabel update --no-wrap -N --ignore-obsolete -i $(LOCALES)/messages.pot -d $(LOCALES) -l $$l; \
	  else $(BIN)/pybabel init --no-wrap -i $(LOCALES)/messages.pot -d $(LOCALES) -l $$l; fi; \
	done

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache node_modules
