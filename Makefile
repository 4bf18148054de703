# `make run`  : set up .venv (idempotent), run the default stress run (pixel occlusion, built-in defaults) and build its failure gallery
# `make test` : set up .venv (idempotent) and run the whole test suite
# `make alarm-study` : the failure alarm's study (docs/alarm.md): a clean calibration run, a held-out clean run, then each
#                      of five families at three severities, each evaluated by `stress alarm` against the calibration
# `make lerobot-env` : LeRobot's own environment (another Python, another torch) for --policy lerobot, in $(LEROBOT_VENV)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# make test: pytest-xdist processes; each test file runs whole on one of them, so its module fixtures are built once
TEST_WORKERS ?= 2
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: setup run test bench alarm-study clean-venv lerobot-env

ALARM_OUT ?= results/alarm-study
ALARM_CAL_EPISODES ?= 50
ALARM_EPISODES ?= 10
ALARM_CLEAN_EPISODES ?= 25
ALARM_FAMILIES ?= occlusion lighting object_pose dynamics mid_chunk_push
ALARM_FLAGS ?= --policy reference --suite libero_spatial --tasks 0 --mode direct --policy-seeds 2 --workers 1
# the held-out clean run and the perturbed runs: another run seed, so other policy noise than the calibration's
ALARM_TEST_FLAGS ?= $(ALARM_FLAGS) --seed 1000 --episodes $(ALARM_EPISODES)
LEROBOT_PYTHON_BASE ?= $(shell pyenv root 2>/dev/null)/versions/3.12.1/bin/python
LEROBOT_VENV ?= .lerobot-venv

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

alarm-study: $(STAMP)
	$(BIN)/stress run $(ALARM_FLAGS) --episodes $(ALARM_CAL_EPISODES) --out $(ALARM_OUT)/calibration
	$(BIN)/stress run $(ALARM_TEST_FLAGS) --episodes $(ALARM_CLEAN_EPISODES) --out $(ALARM_OUT)/clean
	set -e; cal=$$(ls -d $(ALARM_OUT)/calibration/*/ | tail -1); \
	  $(BIN)/stress alarm $$(ls -d $(ALARM_OUT)/clean/*/ | tail -1) --calibration $$cal --alpha 0.05; \
	  for family in $(ALARM_FAMILIES); do \
	  $(BIN)/stress run $(ALARM_TEST_FLAGS) --perturb $$family --severities 1,3,5 --no-baseline --out $(ALARM_OUT)/$$family; \
	  $(BIN)/stress alarm $$(ls -d $(ALARM_OUT)/$$family/*/ | tail -1) --calibration $$cal --alpha 0.05; done

clean-venv:
	rm -rf $(VENV)

# lerobot >= 0.5 needs Python >= 3.12: any 3.12 works (LEROBOT_PYTHON_BASE=...); about 8 min and 6 GB (docs/remote-policy.md, LeRobot)
lerobot-env:
	test -x $(LEROBOT_VENV)/bin/python || $(LEROBOT_PYTHON_BASE) -m venv $(LEROBOT_VENV)
	$(LEROBOT_VENV)/bin/pip install --disable-pip-version-check -q "lerobot[aloha,diffusion]==0.6.1" websockets msgpack
	# the suite's MuJoCo (pip resolves 3.8.1, whose gym_aloha frames drift from 3.3.7's after a few steps)
	$(LEROBOT_VENV)/bin/pip install --disable-pip-version-check -q mujoco==3.3.7 dm_control==1.0.34
	@echo "export STRESS_LEROBOT_PYTHON=$(abspath $(LEROBOT_VENV))/bin/python"
