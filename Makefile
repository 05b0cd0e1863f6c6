# Two commands for a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-quick test-faults lint venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/cloudimaging up

# A local cluster (docs/operations.md): Mosquitto, PostgreSQL, S3, 3 replicas behind HAProxy.
.PHONY: cluster
cluster: $(STAMP)
	$(BIN)/cloudimaging cluster

# The suite on two workers (its tests mostly wait on sockets and processes), then the
# fault-injection tests alone, since they time real processes being killed. Exit code 5 is
# pytest's "no test selected" (PYTEST_ARGS may name files without fault tests).
JOBS ?= 2
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider

test: $(STAMP)
	$(PYTEST) -n $(JOBS) -m "not faults" $(PYTEST_ARGS)
	$(PYTEST) -m faults $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-quick: $(STAMP)
	$(PYTEST) -n $(JOBS) -m "not faults" $(PYTEST_ARGS)

test-faults: $(STAMP)
	$(PYTEST) -m faults $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .cloudimaging build *.egg-info

# Performance figures, each with its baseline from the same run and its goal (docs/bench.md):
# SIZE=tiny|small|full; BENCH_ARGS passes the rest (--only GROUPS, --stacks, --profile).
SIZE ?= small
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m tests.bench --size $(SIZE) $(BENCH_ARGS)
