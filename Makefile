# `make run`  : set up .venv (idempotent), run the default stress run (pixel occlusion, built-in defaults) and build its failure gallery
# `make test` : set up .venv (idempotent) and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# make test: pytest-xdist processes; each test file runs whole on one of them, so its module fixtures are built once
TEST_WORKERS ?= 2
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: setup run test bench clean-venv

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,ray]'
	$(PIP) --no-deps hf-libero==0.1.4
	$(PIP) --no-deps openpi-client==0.1.2
	$(BIN)/python -m stress.envs.libero_setup
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/stress run --perturb occlusion --gallery 2

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(BIN)/stress bench

clean-venv:
	rm -rf $(VENV)
