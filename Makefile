# `make run`  : set up .venv (idempotent), run the default stress run (pixel occlusion, built-in defaults) and build its failure gallery
# `make test` : set up .venv (idempotent) and run the whole test suite
# `make lerobot-env` : LeRobot's own environment (another Python, another torch) for --policy lerobot, in $(LEROBOT_VENV)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

LEROBOT_PYTHON_BASE ?= $(shell pyenv root 2>/dev/null)/versions/3.12.1/bin/python
LEROBOT_VENV ?= .lerobot-venv

.PHONY: setup run test bench clean-venv lerobot-env

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
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/stress bench

clean-venv:
	rm -rf $(VENV)

# lerobot >= 0.5 needs Python >= 3.12: any 3.12 works (LEROBOT_PYTHON_BASE=...); about 8 min and 6 GB (docs/remote-policy.md, LeRobot)
lerobot-env:
	test -x $(LEROBOT_VENV)/bin/python || $(LEROBOT_PYTHON_BASE) -m venv $(LEROBOT_VENV)
	$(LEROBOT_VENV)/bin/pip install --disable-pip-version-check -q "lerobot[aloha,diffusion]==0.6.1" websockets msgpack
	# the suite's MuJoCo (pip resolves 3.8.1, whose gym_aloha frames drift from 3.3.7's after a few steps)
	$(LEROBOT_VENV)/bin/pip install --disable-pip-version-check -q mujoco==3.3.7 dm_control==1.0.34
	@echo "export STRESS_LEROBOT_PYTHON=$(abspath $(LEROBOT_VENV))/bin/python"
