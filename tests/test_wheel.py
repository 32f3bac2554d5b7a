"""The user's install path: ``python -m build`` gives a wheel that carries the C sources, py.typed and the
LICENSE; installed into a fresh virtual environment outside the checkout (the wheel with ``--no-deps``, the
pinned CPU torch from local disk, then the requirements its own metadata declares), ``spikestab demo`` runs
from it and its C kernels build from the installed package data. The install takes minutes (torch alone is
800 MB), so that test is ``slow``: ``pytest -m slow tests/test_wheel.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the CPU build on local disk (never a CUDA build from the index)
# what `spikestab demo --source digits` needs beyond the base requirements: the 8x8 digits and the figures
DEMO_EXTRAS = ("data", "plots")
DEMO_PACKAGES = ("scikit-learn", "matplotlib")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int) -> str:
    """Run ``cmd``, return its output (stdout and stderr), fail the test with that output on an error."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    print(f"$ {' '.join(cmd)}\n{output}")  # the log of the install and the demo (pytest -s shows it)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{output[-4000:]}"
    return output


def _requirements(wheel: Path) -> list[str]:
    """The base requirements the wheel's METADATA declares (no extras), torch left out (installed first)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(z.read(meta).decode())
    reqs = [r for r in headers.get_all("Requires-Dist") or [] if ";" not in r]
    assert any(r.startswith("torch") for r in reqs), reqs
    for extra in DEMO_EXTRAS:
        assert extra in (headers.get_all("Provides-Extra") or []), extra
    assert "all" in (headers.get_all("Provides-Extra") or [])
    return [r for r in reqs if not r.startswith("torch")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel ``python -m build`` makes of the checkout (through its sdist, as a release would)."""
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], dist, _env(dist), 600)
    (built,) = dist.glob("spikestab-*.whl")
    return built


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", SPIKESTAB_CACHE=str(tmp / "cache"), MPLBACKEND="Agg")
    return env


def test_wheel_carries_the_c_sources_marker_and_license(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    csrc = {Path(n).name for n in names if n.startswith("spikestab/kernels/csrc/")}
    assert csrc == {p.name for p in (ROOT / "src/spikestab/kernels/csrc").iterdir() if p.suffix in (".c", ".h")}
    assert "spikestab/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)[-10:]
    assert _requirements(wheel)


@pytest.mark.slow
def test_wheel_installs_and_runs_the_demo(wheel, tmp_path):
    env = _env(tmp_path)
    venv = tmp_path / "venv"  # outside the checkout, no access to the build environment's packages
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env, 300)
    py, pip = venv / "bin/python", [str(venv / "bin/python"), "-m", "pip", "install", "-q"]
    _run([*pip, TORCH], tmp_path, env, 600)
    _run([*pip, "--no-deps", str(wheel)], tmp_path, env, 300)
    _run([*pip, *_requirements(wheel), *DEMO_PACKAGES], tmp_path, env, 600)

    where = _run(
        [str(py), "-c", "import spikestab, torch; print(spikestab.__file__, torch.__version__)"], tmp_path, env, 120
    )
    assert str(venv) in where and str(ROOT) not in where and "+cpu" in where, where
    out = tmp_path / "demo"
    log = _run(
        [
            str(venv / "bin/spikestab"),
            "demo",
            "--out",
            str(out),
            "--source",
            "digits",
            "--epochs",
            "1",
            "--width",
            "16",
            "--no-progress",
        ],
        tmp_path,
        env,
        600,
    )
    assert "stabilized" in log and "naive" in log
    assert (out / "demo.json").is_file() and (out / "figures" / "val_accuracy.png").is_file()
    # the C time loops were compiled from the installed sources into SPIKESTAB_CACHE
    assert list((tmp_path / "cache").rglob("*.so")), list((tmp_path / "cache").rglob("*"))
