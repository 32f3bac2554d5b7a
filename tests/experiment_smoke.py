"""Run an experiments/ script at ``--scale smoke`` in a fresh process, as the experiment tests do: its
runs and results under a temporary folder (``SPIKESTAB_EXPERIMENT_OUT``), one thread; and import the
scripts as modules (``experiments``) to test their functions and generated blocks."""

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def run_smoke(script: str, out: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python experiments/<script> --scale smoke <args>`` writing under ``out``; the caller checks it."""
    env = {**os.environ, "SPIKESTAB_EXPERIMENT_OUT": str(out), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(EXPERIMENTS / script), "--scale", "smoke", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def smoke_results(script: str, folder: str, out: Path, *args: str, timeout: int = 300) -> Path:
    """``run_smoke`` that must succeed (its stderr shown otherwise): the script's results folder
    ``out/docs/results/<folder>/smoke``."""
    run = run_smoke(script, out, *args, timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return out / "docs" / "results" / folder / "smoke"


def experiments(*names: str) -> list[ModuleType]:
    """The modules experiments/<name>.py, imported with the folder on ``sys.path`` only while importing."""
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.pop(0)
