# The two commands a newcomer needs: `make demo` and `make test`. Both set up what is missing
# first (scripts/setup_env.sh keeps a stamp per environment) and are quick when nothing changed.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PY := .venv/bin/python
PYTEST_ARGS ?=
# 2 pytest-xdist workers, each test file on one worker (module fixtures built once); the expensive session
# builds are shared by both (tests/shared_builds.py: built_once). XDIST= runs serially.
XDIST ?= -n 2 --dist loadfile
export HF_HUB_OFFLINE := 1
export AXOLOTL_DO_NOT_TRACK := 1
export WANDB_MODE := disabled

.PHONY: help setup setup-train setup-serve tiny-model demo demo-rl test test-fast bench clean

help:
	@echo "make demo        whole pipeline on a tiny local model, CPU (sets up first)"
	@echo "make demo-rl     RL journey on the tiny model, CPU: short SFT, GRPO rewarded by the judge, compared"
	@echo "make test        set up what is missing, then run every test (slow ones included)"
	@echo "make test-fast   only the tests not marked slow"
	@echo "make setup       create/refresh .venv (train, merge, eval) and .venv-serve (vLLM)"
	@echo "make tiny-model  build the tiny local base model into build/tiny-qwen2"
	@echo "make bench       run the benchmarks in benchmarks/"
	@echo "make clean       remove build outputs (keeps the environments)"

setup: setup-train setup-serve

setup-train:
	@bash scripts/setup_env.sh train

setup-serve:
	@bash scripts/setup_env.sh serve

tiny-model: setup-train
	@$(PY) fine-tuning/build_tiny_model.py --out build/tiny-qwen2

demo: setup
	@$(PY) -m quantummind.demo

demo-rl: setup
	@$(PY) -m quantummind.demo --rl

test: setup
	@$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: setup
	@$(PY) -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

bench: setup
	@for b in benchmarks/*_bench.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf build runs fine-tuning/checkpoints fine-tuning/merged_models .cache/probe
