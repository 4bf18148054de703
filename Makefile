# `make run`  : set up .venv (idempotent), run the default stress run (pixel occlusion, built-in defaults) and build its failure gallery
# `make test` : set up .venv (idempotent) and run the whole test suite
# `make alarm-study` : the failure alarm's study (docs/alarm.md): a clean calibration run, then each of five families at
#                      three severities, each evaluated by `stress alarm` against the calibration (ALARM_EPISODES=5: reduced)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: setup run test bench alarm-study clean-venv

ALARM_OUT ?= results/alarm-study
ALARM_EPISODES ?= 50
ALARM_FAMILIES ?= occlusion lighting object_pose dynamics mid_chunk_push
ALARM_FLAGS ?= --policy reference --suite libero_spatial --tasks 0 --mode planning --candidates 4 --policy-seeds 2 --workers 1

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

alarm-study: $(STAMP)
	$(BIN)/stress run $(ALARM_FLAGS) --episodes $(ALARM_EPISODES) --out $(ALARM_OUT)/calibration
	set -e; cal=$$(ls -d $(ALARM_OUT)/calibration/*/ | tail -1); for family in $(ALARM_FAMILIES); do \
	  $(BIN)/stress run $(ALARM_FLAGS) --perturb $$family --severities 1,3,5 --no-baseline --episodes $(ALARM_EPISODES) --out $(ALARM_OUT)/$$family; \
	  $(BIN)/stress alarm $$(ls -d $(ALARM_OUT)/$$family/*/ | tail -1) --calibration $$cal --alpha 0.05; done

clean-venv:
	rm -rf $(VENV)
