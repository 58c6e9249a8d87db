# wb-highlights: the obvious targets. `make run` and `make test` are the README's quick start.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint format typecheck schemas bench fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,fuzz]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## the worker on embedded defaults: SQLite file, bundled broker, web on :6066
	$(BIN)/wb run

# Test processes in parallel (pytest-xdist): the live tests mostly wait on brokers and group
# joins, so more processes than the machine's 2 cores pay off; each has its own PostgreSQL
# cluster, databases, brokers and consumer groups.
TEST_WORKERS ?= 4

test: $(STAMP)  ## everything: installs what it needs (scripts/provision), lint, types, all tests
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	scripts/provision
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=25

test-fast: $(STAMP)  ## no broker, no worker processes: seconds
	$(BIN)/pytest -q -m "not slow and not broker"

lint: $(STAMP)  ## ruff, formatting and the import-linter layer contracts
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schemas: $(STAMP)  ## regenerate schemas/*.json from the event models
	$(BIN)/python -m worker.cli.schemas

bench: $(STAMP)  ## throughput/latency against the lean reference, on Tansu and Apache Kafka
	scripts/provision
	$(BIN)/python -m bench

fuzz: $(STAMP)  ## coverage-guided fuzzing of the decoders for 60 s (on a copy of the seed corpus)
	rm -rf var/fuzz-corpus && mkdir -p var && cp -r tests/fuzz/corpus/decoders var/fuzz-corpus
	$(BIN)/python tests/fuzz/fuzz_decoders.py -max_total_time=60 var/fuzz-corpus

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
