"""Run an experiments/ script at ``--scale smoke`` in a fresh process, as the experiment tests do: its
runs and results under a temporary folder (``SPIKESTAB_EXPERIMENT_OUT``), one thread."""

import os
import subprocess
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def run_smoke(script: str, out: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python experiments/<script> --scale smoke <args>`` writing under ``out``; the caller checks it."""
    env = {**os.environ, "SPIKESTAB_EXPERIMENT_OUT": str(out), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(EXPERIMENTS / script), "--scale", "smoke", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
