"""docs/getting_started.md runs as written: every ``bash`` and ``python`` block, in page order, in one empty
folder (the page's sizes are the tiny ones CI affords). ``console`` blocks are shown, not run: they may only
install or download (the network), which this test checks so that no other command hides there. And every
link of the built documentation site resolves to a file of the site (beyond what ``mkdocs --strict``
validates: links in raw HTML and in the docstrings of the API reference too)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "getting_started.md"
NOT_RUN = ("pip install", "python -m build", "spikestab download", "spikestab train --task shd")


def _blocks() -> list[tuple[str, str]]:
    return re.findall(r"^```(\w+)\n(.*?)^```", PAGE.read_text(), flags=re.S | re.M)


def test_console_blocks_only_install_or_download():
    console = [code for lang, code in _blocks() if lang == "console"]
    assert console
    for line in (line for code in console for line in code.splitlines()):
        assert line.startswith("$ ") and line[2:].startswith(NOT_RUN), line
    assert {lang for lang, _ in _blocks()} == {"bash", "python", "console"}


def test_every_bash_and_python_block_runs(tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "SPIKESTAB_DATA": str(tmp_path / "data"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    ran = 0
    for lang, code in _blocks():
        if lang == "console":
            continue
        cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"block {ran} ({lang}) failed:\n{code}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        ran += 1
    assert ran >= 6
    assert (tmp_path / "runs" / "first" / "demo.json").is_file()
    assert (tmp_path / "runs" / "damp" / "trials").is_dir()


def _dead_links(site: Path) -> list[tuple[str, str]]:
    """(page, link) of every relative href/src of the built site whose file does not exist."""
    dead = []
    for page in site.rglob("*.html"):
        for url in re.findall(r'(?:href|src)="([^"]+)"', page.read_text(errors="replace")):
            parsed = urlparse(url)
            if parsed.scheme or parsed.netloc or not parsed.path:  # other sites, mailto:, #anchors
                continue
            path = unquote(parsed.path)
            target = site / path.lstrip("/") if path.startswith("/") else (page.parent / path).resolve()
            if not (target / "index.html" if target.is_dir() else target).exists():
                dead.append((str(page.relative_to(site)), url))
    return dead


def test_every_link_of_the_built_site_resolves(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]  # strict: mkdocs' own link validation (mkdocs.yml)
    assert (site / "getting_started" / "index.html").is_file()
    assert _dead_links(site) == []
    # the check itself: a link to a folder the site does not build (no index page) is dead
    (site / "api" / "probe.html").write_text('<a href="../results/fig4/">x</a><img src="missing.png">')
    assert _dead_links(site) == [("api/probe.html", "../results/fig4/"), ("api/probe.html", "missing.png")]
