"""docs/bring_your_own.md runs as written: its Python blocks, in order, in one namespace (a later block may
use what an earlier one built), in a temporary folder (the examples save state_dicts)."""

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parent.parent / "docs" / "bring_your_own.md"

pytest.importorskip("snntorch")
pytest.importorskip("norse")
pytest.importorskip("spikingjelly")
pytestmark = pytest.mark.usefixtures("one_thread")


def blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", PAGE.read_text(), flags=re.S | re.M)


def test_every_example_is_found():
    code = blocks()
    assert len(code) == 4
    for library, block in zip(("snntorch", "norse", "spikingjelly"), code):
        assert f"import {library}" in block or f"from {library}" in block
        assert "stabilize(net" in block and "load_state_dict" in block and "optimizer.step()" in block


def test_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "bring_your_own"}
    for block in blocks():
        exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102 - the page's own examples
    out = capsys.readouterr().out
    assert out.count("layer 1:") >= 3  # every example printed its report (two spiking modules each)
    assert out.rstrip().endswith("True")  # the rebuilt SpikingJelly network equals the stabilised one
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["norse_net.pt", "snntorch_net.pt", "spikingjelly_net.pt"]
