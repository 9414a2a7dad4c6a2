# Ferry's commands. Each target installs what it needs into .venv first (quick when it is there).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ferry-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-unit up down services status lint install clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install Ferry with its pinned dependencies

demo: $(STAMP) ## start the stack and the services, then run the whole loop
	$(BIN)/ferry demo

test: $(STAMP) ## run every test (starts its own Kafka and PostgreSQL)
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

up: $(STAMP) ## start Kafka and PostgreSQL under .ferry/
	$(BIN)/ferry stack up

services: $(STAMP) ## run the services in the foreground (after 'make up'); Ctrl-C stops them
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho -f deploy/Procfile -d . start

down: ## stop what 'make up' started
	@if test -x $(BIN)/ferry; then $(BIN)/ferry stack down; fi

status: $(STAMP)
	$(BIN)/ferry stack status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services

clean: down
	rm -rf .ferry .ferry-test
