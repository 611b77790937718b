# The two commands a newcomer needs: `make run` and `make test`. Both install what they
# need into .venv/ and generate the protobuf code first.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

PROTOS := $(wildcard protos/credit/v1/*.proto)
GENERATED := $(PROTOS:.proto=_pb2.py)
# buf (lint and breaking-change checks of the protos) comes from npm, pinned by
# tools/package-lock.json and installed into tools/node_modules, never globally.
TOOLS := tools/node_modules/.installed
BUF := tools/node_modules/.bin/buf

.PHONY: install proto lint lint-proto typecheck certs run test test-unit test-integration test-e2e bench report-deps clean

install: $(VENV)/.installed $(TOOLS)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'setuptools>=69' wheel
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(TOOLS): tools/package.json tools/package-lock.json
	cd tools && npm ci
	touch $@

proto: $(GENERATED)

$(GENERATED) &: $(PROTOS) $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -Iprotos \
		--python_out=protos --grpc_python_out=protos \
		--mypy_out=protos --mypy_grpc_out=protos \
		$(PROTOS)

run: proto
	$(PY) -m server.devstack

certs: install
	$(PY) -m server.devcerts --out var/certs

lint: install lint-proto
	$(VENV)/bin/ruff check server collections_bot tests bench examples tools

# buf lint (protos/buf.yaml), then buf breaking against the previous commit less the
# changes accepted in protos/breaking-accepted.yaml; BUF_BREAKING_AGAINST=REF compares
# with another commit (e.g. main, for every change of a branch). docs/api-conventions.md.
lint-proto: install
	cd protos && ../$(BUF) lint
	$(PY) tools/proto_breaking.py

# What it checks and how: [tool.mypy] in pyproject.toml (the generated .pyi stubs in
# protos/ included). Its cache in .mypy_cache/ makes a second run take seconds.
typecheck: proto
	$(VENV)/bin/mypy

test: proto lint typecheck
	$(PY) -m pytest

test-unit: proto
	$(PY) -m pytest tests/unit

test-integration: proto
	$(PY) -m pytest tests/integration

test-e2e: proto
	$(PY) -m pytest tests/e2e

# The load generator's extra (matplotlib, for the concurrency plot).
$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

# About 4 minutes on 2 cores: every scenario against the floor, the concurrency sweep
# (plotted into docs/benchmarks-concurrency.png) and 1 vs 2 server processes.
bench: proto $(VENV)/.bench-installed
	$(PY) -m bench.checkout --plot --server-processes 1,2

# The portfolio report's chart (`python -m server.risk.report --plot FILE.png`): matplotlib,
# which nothing else of the service needs.
report-deps: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,report]'

clean:
	rm -rf $(VENV) tools/node_modules var build *.egg-info .mypy_cache protos/credit/v1/*_pb2*.py protos/credit/v1/*_pb2*.pyi
