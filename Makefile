# Two commands need no set-up beforehand:  `make demo`  and  `make test`.
# Each creates .venv when missing, installs torch (the CPU build when no GPU is present) and the
# package with its [dev] extras, and is safe to rerun: the install is skipped while its stamp file
# is newer than setup.py.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.prism-hf-installed
# The CPU wheel of this torch release lies on the development machines' disk; any torch>=2.4 works.
CPU_TORCH ?= torch==2.13.0
PIP_FLAGS ?= --progress-bar off
DEMO_DIR ?= outputs/sudoku-demo
TESTS ?= tests

.PHONY: help install demo test docs docs-serve bench lint clean

help:
	@echo "make demo   - Sudoku demo: train a tiny PRISM model and solve puzzles (writes $(DEMO_DIR))"
	@echo "make test   - the whole test suite, offline (includes the strict docs build)"
	@echo "make docs   - build the documentation site into site/ (mkdocs --strict)"
	@echo "make bench  - run the benchmarks in benchmarks/"
	@echo "make lint   - ruff check"
	@echo "make clean  - remove build outputs (keeps .venv)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) --upgrade pip

$(STAMP): setup.py | $(PY)
	@if $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: installing torch with CUDA"; \
		$(PIP) install $(PIP_FLAGS) torch; \
	else \
		echo "No GPU found: installing CPU torch ($(CPU_TORCH))"; \
		$(PIP) install $(PIP_FLAGS) "$(CPU_TORCH)"; \
	fi
	$(PIP) install $(PIP_FLAGS) -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/prism-hf sudoku demo --output-dir $(DEMO_DIR)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(TESTS)

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

bench: $(STAMP)
	@set -e; for script in benchmarks/bench_*.py; do \
		[ -e "$$script" ] || { echo "no benchmarks yet"; break; }; \
		echo "== $$script"; HF_HUB_OFFLINE=1 $(PY) "$$script"; \
	done

lint: $(STAMP)
	$(PY) -m ruff check src tests

clean:
	rm -rf site build dist .pytest_cache src/*.egg-info
