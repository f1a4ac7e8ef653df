# sight-ops developer entry points. Everything runs natively: no Docker engine needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/constraints.txt 2>/dev/null | sha1sum | cut -c1-12)
LINT_PATHS := shared functions standins sightops
PYTEST_ARGS ?=

.PHONY: help venv dev test lint fmt bench clean services-up services-down lint-migrations package check-infra

help:
	@echo "make dev    - the whole system locally, with a live timeline (Ctrl-C stops it)"
	@echo "make test   - lint, then start services, run the test suite, stop what it started"
	@echo "make lint   - ruff and strict mypy"
	@echo "make fmt    - format and auto-fix"
	@echo "make bench  - benchmarks (ratios against a baseline in the same run)"
	@echo "make package     - per-function deployable dirs and content-hashed zips in dist/"
	@echo "make check-infra - offline checks of terraform/, Dockerfile, Cloud Build, compose, secrets"
	@echo "make clean  - stop services, remove local state and caches"

venv: $(STAMP)

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

dev: venv
	$(BIN)/sightops dev

test: venv lint check-infra
	scripts/test.sh $(PYTEST_ARGS)

package: venv
	$(BIN)/python -m sightops.package

check-infra: venv
	scripts/check_infra.sh

lint: venv lint-migrations
	$(BIN)/ruff check .
	$(BIN)/ruff format --check $(LINT_PATHS) tests bench
	$(BIN)/mypy $(LINT_PATHS)

# Offline (no database): every Alembic migration from base, linted as migrate does.
lint-migrations: venv
	$(BIN)/sightops migrations lint

fmt: venv
	$(BIN)/ruff format $(LINT_PATHS) tests bench
	$(BIN)/ruff check --fix .

bench: venv
	scripts/bench.sh

services-up: venv
	scripts/services/up.sh

services-down:
	scripts/services/down.sh

clean: services-down
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
