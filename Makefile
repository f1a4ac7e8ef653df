# sight-ops developer entry points. Everything runs natively: no Docker engine needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/constraints.txt 2>/dev/null | sha1sum | cut -c1-12)
LINT_PATHS := shared functions standins sightops
PYTEST_ARGS ?=

.PHONY: help venv dev test proof lint fmt bench clean services-up services-down lint-migrations package check-infra

help:
	@echo "make dev    - the whole system locally, with a live timeline (Ctrl-C stops it)"
	@echo "make test   - lint, then start services, run the test suite, stop what it started"
	@echo "make lint   - ruff and strict mypy"
	@echo "make fmt    - format and auto-fix"
	@echo "make bench  - benchmarks (ratios against a baseline in the same run)"
	@echo "make proof  - fuzz (FUZZ_EXAMPLES=2000), full fault matrix (FAULT_MESSAGES=12), pool hygiene (POOL_DELIVERIES=10000), canary A/A (CANARY_AA_RUNS=1000), every CLI command offline in both worlds"
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

# The fuzz proof, the fault matrix and pool hygiene at full size (docs/reliability.md);
# `make test` runs the same tests smaller. The reliability run rewrites the doc's tables.
FUZZ_EXAMPLES ?= 2000
POOL_DELIVERIES ?= 10000
FAULT_MESSAGES ?= 12
# canary A/A runs at both cadences: false rollbacks within the stated 1 % (docs/canary.md; about 16 s)
CANARY_AA_RUNS ?= 1000
proof: venv
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) scripts/test.sh -m proof --show-capture=no tests/proof $(PYTEST_ARGS)
	POOL_DELIVERIES=$(POOL_DELIVERIES) FAULT_MESSAGES=$(FAULT_MESSAGES) FAULT_MATRIX=full RELIABILITY_WRITE_DOCS=1 \
		scripts/test.sh --show-capture=no tests/reliability $(PYTEST_ARGS)
	CANARY_AA_RUNS=$(CANARY_AA_RUNS) $(BIN)/pytest tests/shared/canary -k aa_runs $(PYTEST_ARGS)
	CLI_OFFLINE=full $(BIN)/pytest tests/sightops/test_cli_offline.py $(PYTEST_ARGS)

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
