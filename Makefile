# One entry point for people and CI. Everything runs from a local virtual environment
# that these rules create from the repository's own files.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= $(shell grep -v "^\#" requirements-torch.txt | head -n 1)
# Where PyTorch comes from: PyPI by default (Linux wheels with CUDA, ~7 GB with their
# libraries). On a machine without an NVIDIA GPU, `make env-cpu` takes PyTorch's CPU-only
# wheels instead (~1 GB); it needs download.pytorch.org to be reachable.
TORCH_INDEX ?=
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
# Known-good versions (requirements/constraints.txt) for CI runs; empty elsewhere, so a user
# gets the newest releases setup.cfg allows. `make env CONSTRAINTS=requirements/constraints.txt`
# reproduces CI's environment.
CONSTRAINTS ?= $(if $(CI),requirements/constraints.txt,)
PIP_CONSTRAINTS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
DEMO_DIR ?= demo
PYTEST_ARGS ?=

.PHONY: help env env-cpu env-test test test-fast test-slurm demo train-default train-gpu bench bench-gpu clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: setup.cfg pyproject.toml requirements-torch.txt requirements/known-lenses.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),) $(TORCH_SPEC)
	$(PY) -m pip install --quiet $(PIP_CONSTRAINTS) -e .
	# lenscat ships the catalogue of known lenses; its own dependencies (ligo.skymap) are not needed to read it.
	$(PY) -m pip install --quiet --no-deps $(PIP_CONSTRAINTS) -r requirements/known-lenses.txt
	touch $@

# The test tools (pytest, hypothesis, selenium, ...) only for the targets that test.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet $(PIP_CONSTRAINTS) -e ".[test]"
	touch $@

env: $(VENV)/.installed  ## create the virtual environment (.venv) to run lensfinder (no test tools)

env-cpu:  ## the same with PyTorch's CPU-only wheels: for a laptop without an NVIDIA GPU
	$(MAKE) env TORCH_INDEX=$(TORCH_CPU_INDEX)

env-test: $(VENV)/.installed-test  ## .venv plus the test tools

test: $(VENV)/.installed-test  ## check the import contracts (.importlinter), then run the whole test suite
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-test  ## the test suite without the slow tests
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slurm: $(VENV)/.installed-test  ## the tests that need SLURM (start it with deploy/ci/start-slurm.sh)
	$(PY) -m pytest -m slurm $(PYTEST_ARGS)

demo: $(VENV)/.installed  ## mock survey -> run_survey.py -> ranked catalogue, with AUROC vs truth
	$(PY) run_survey.py --demo --out $(DEMO_DIR)

# Three stages: population1 (both simulators' population 1), population2 fine-tuned from it on
# population 2, then the default fine-tuned from that on population 2's visible lenses.
# TRAIN_OUT=DIR writes DIR/population1, DIR/population2 and DIR/default instead of the shipped ones;
# TRAIN_FLAGS adds lensnet.train flags to every stage (e.g. "--precision bf16", "--threads 2").
STAGE1_OUT = $(if $(TRAIN_OUT),$(TRAIN_OUT)/population1,lensnet/weights/population1)
STAGE2_OUT = $(if $(TRAIN_OUT),$(TRAIN_OUT)/population2,lensnet/weights/population2)
TRAIN_FLAGS ?=
train-default: $(VENV)/.installed  ## retrain the shipped default model from its recorded recipes (three stages)
	$(PY) -m lensnet.train --config lensnet/weights/population1/train.yaml --out $(STAGE1_OUT) --resume $(TRAIN_FLAGS)
	$(PY) -m lensnet.train --config lensnet/weights/population2/train.yaml --init-from $(STAGE1_OUT) \
		--out $(STAGE2_OUT) --resume $(TRAIN_FLAGS)
	$(PY) -m lensnet.train --config lensnet/weights/default/train.yaml --init-from $(STAGE2_OUT) \
		--out $(if $(TRAIN_OUT),$(TRAIN_OUT)/default,lensnet/weights/default) --resume $(TRAIN_FLAGS)

GPU_OUT ?= runs/gpu-population2
train-gpu: $(VENV)/.installed  ## GPU node: simulate, train a wider model from scratch on population 2, evaluate (one folder, 9-min budget)
	$(PY) -m lensnet.build --config lensnet/recipes/gpu-population2.yaml --out $(GPU_OUT) --budget-min 9 --device cuda

bench: $(VENV)/.installed  ## speed benchmarks (see benchmarks/RESULTS.md)
	$(PY) benchmarks/run_all.py

bench-gpu: $(VENV)/.installed  ## GPU node benchmark (CUDA machine, ~5-8 min on one H200): benchmarks/results/gpu/
	$(PY) benchmarks/gpu_bench.py --out benchmarks/results/gpu

clean:  ## remove the environment and generated outputs
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
