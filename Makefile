# One entry point for people and CI. Everything runs from a local virtual environment
# that these rules create from the repository's own files.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= $(shell grep -v "^\#" requirements-torch.txt | head -n 1)
DEMO_DIR ?= demo
PYTEST_ARGS ?=

.PHONY: help env test test-fast test-slurm demo train-default bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: setup.cfg pyproject.toml requirements-torch.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test]"
	# lenscat ships the catalogue of known lenses; its own dependencies (ligo.skymap) are not needed to read it.
	$(PY) -m pip install --quiet --no-deps "lenscat>=1.1"
	touch $@

env: $(VENV)/.installed  ## create the virtual environment (.venv)

test: $(VENV)/.installed  ## run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed  ## the test suite without the slow tests
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slurm: $(VENV)/.installed  ## the tests that need SLURM (start it with deploy/ci/start-slurm.sh)
	$(PY) -m pytest -m slurm $(PYTEST_ARGS)

demo: $(VENV)/.installed  ## mock survey -> run_survey.py -> ranked catalogue, with AUROC vs truth
	$(PY) run_survey.py --demo --out $(DEMO_DIR)

train-default: $(VENV)/.installed  ## retrain the shipped default model from its recorded recipe
	$(PY) -m lensnet.train --config lensnet/weights/default/train.yaml --out $(or $(TRAIN_OUT),lensnet/weights/default)

bench: $(VENV)/.installed  ## speed benchmarks (see benchmarks/RESULTS.md)
	$(PY) benchmarks/run_all.py

clean:  ## remove the environment and generated outputs
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
