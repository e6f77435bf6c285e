# Two entry points for a fresh machine: `make up` and `make test`.
# Each bootstraps .venv from pyproject.toml (exact versions from requirements.lock).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test bench clean otelcol kafka-jars

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Run the whole embedded stack (Tansu broker, OTLP receiver, processors, chDB, SQL endpoint) with demo traffic.
up: install
	$(BIN)/llmops up --demo

## Run the test suite (unit + integration on real parts). pytest's exit code 5 (no tests collected) is a failure.
## Two pytest-xdist workers, one test file (one group) at a time each: most integration time is waiting on brokers
## and timers, so two files overlap well on two cores (tests/conftest.py groups the heavy production path).
PYTEST_ARGS ?= -n 2 --dist loadgroup
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

## The production path's real parts, cached outside the repository (~/.cache/llmops); the tests that need them
## build or fetch them on first use too, so `make test` needs neither target. `make up` needs neither (Python only).
## OpenTelemetry Collector from upstream Go modules (collector/otelcol/): needs Go.
otelcol: install
	$(BIN)/python tests/otelcol_build.py

## Apache Kafka's broker jars from Maven Central (deploy/kafka/pom.xml): needs a JDK and Maven.
kafka-jars: install
	$(BIN)/python tests/kafka_jars.py

bench: install
	$(BIN)/python benchmarks/bench_pipeline.py

clean:
	rm -rf $(VENV) .llmops .pytest_cache
