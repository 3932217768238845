# Two commands on a fresh machine with Python 3.11: `make up` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test lint bench fuzz conformance-tools kafka-jars clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

conformance-tools:
	bash infra/conformance/install.sh

# Apache Kafka's jars (Maven Central, once) for the real-Kafka tests and `only1mcp up --broker kafka`:
# .tools/kafka-<version>/libs, plus a JVM class archive that speeds up every start. Needs java and mvn.
kafka-jars: install
	$(BIN)/python -m only1mcp.infra.kafka fetch

# The demo: embedded broker, Redis, worker, proxy, simulated upstream replicas and a load
# generator (`only1mcp up --demo`, see README.md); Ctrl-C stops everything.
up: install
	$(BIN)/only1mcp up --demo

lint: install
	$(BIN)/ruff check only1mcp proxy streams feature_store models jobs tests

test: install conformance-tools kafka-jars lint
	$(BIN)/python -m pytest

# The long fuzz run (hypothesis, random seeds, the "fuzz" profile of tests/conftest.py): at least
# 20,000 generated requests to /mcp through a real proxy, and the in-process inputs; prints the count.
fuzz: install
	ONLY1MCP_FUZZ=1 $(BIN)/python -m pytest -p no:cacheprovider -s -q tests/proxy/test_fuzz_mcp.py tests/core/test_fuzz_inputs.py

bench: install
	$(BIN)/only1mcp bench proxy

clean:
	rm -rf $(VENV) .tools build *.egg-info
