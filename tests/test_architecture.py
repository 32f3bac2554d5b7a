"""Imports go the way docs/architecture.md says: every module's spikestab imports against the table there,
no private names across modules, and the leaf modules stay leaves; and no function in src/ longer than a
screen (MAX_FUNCTION_LINES)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "spikestab"


def _allowed() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("<!-- allowed-imports -->")[1].split("<!-- /allowed-imports -->")[0]
    rows = {}
    for line in table.splitlines():
        m = re.fullmatch(r"\| `([\w.]+)` \|(.*)\|", line.strip())
        if m:
            rows[m.group(1)] = {n.strip() for n in m.group(2).split(",") if n.strip()}
    return rows


def _imports(path: Path) -> list[tuple[list[str], list[str]]]:
    """(absolute module path inside spikestab, imported names) of every relative import in ``path``."""
    package = list(path.relative_to(SRC).parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                out.append((base + node.module.split("."), [a.name for a in node.names]))
            else:  # from . import x: x is a module of the package (or the package's __version__)
                out += [(base + [a.name], []) if a.name != "__version__" else (base, [a.name]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spikestab"):
            out.append((node.module.split(".")[1:], [a.name for a in node.names]))
    return out


def _unit(parts: list[str]) -> str:
    return parts[0].removesuffix(".py")


def test_every_import_follows_the_architecture_table():
    allowed = _allowed()
    bad = []
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).parts)
        unit = _unit(parts)
        if unit in ("__init__", "__main__"):
            continue
        assert unit in allowed, f"{unit} is missing from the table in docs/architecture.md"
        row = ".".join(p.removesuffix(".py") for p in parts[:2])  # a module with a row of its own
        rules = allowed.get(row, allowed[unit])
        for target, names in _imports(path):
            if not target:  # from .. import __version__ (the package's metadata)
                assert names == ["__version__"], (path, names)
                continue
            other = target[0]
            if other != unit and other not in rules:
                bad.append(f"{path.relative_to(SRC)} imports {'.'.join(target)}")
    assert bad == []


def test_no_module_imports_another_modules_private_names():
    bad = [
        f"{path.relative_to(SRC)}: {'.'.join(target)}.{name}"
        for path in SRC.rglob("*.py")
        for target, names in _imports(path)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert bad == []


def test_conditions_work_on_plain_tensors():
    """stability.conditions needs no measurement machinery: only the dynamics, the SGs and the solvers."""
    targets = {".".join(t) for t, _ in _imports(SRC / "stability" / "conditions.py")}
    assert targets <= {"dynamics", "surrogate", "stability.solvers"}, targets
    kernels = {t[0] for p in (SRC / "kernels").rglob("*.py") for t, _ in _imports(p) if t}
    assert "neurons" not in kernels


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_graph() -> dict[str, set[str]]:
    """module -> the spikestab modules it imports (at load or inside a function alike); ``from pkg import
    name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target, names in _imports(path):
            base = ".".join(target)
            for n in names or [""]:
                full = f"{base}.{n}" if n else base
                edges.add(full if full in modules else base)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def test_no_import_cycle_between_modules():
    """Imports go one way between modules too (a package importing its own __init__ aside): depth-first
    search for a cycle over every module's imports, lazy ones included."""
    graph = _module_graph()
    for name in graph:  # a package's __init__ re-exports its modules: not an arrow back up
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_no_module_imports_a_command_line_module():
    """The command modules (``cli``) are entry points: nothing imports them but the ``spikestab`` command,
    which loads them by name."""
    graph = _module_graph()
    bad = [
        f"{m} imports {t}"
        for m, targets in graph.items()
        for t in targets
        if t.rpartition(".")[2] == "cli" and m != "__main__"
    ]
    assert bad == []


MAX_FUNCTION_LINES = 60  # a function's body, its docstring left out


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from a function's first statement after its docstring to the end of its last one."""
    body = fn.body
    if ast.get_docstring(fn, clean=False) is not None:
        body = body[1:]
    return 0 if not body else body[-1].end_lineno - body[0].lineno + 1


def _long_functions(tree: ast.AST, where: str) -> dict[str, int]:
    return {
        f"{where}:{node.name}": n
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (n := _body_lines(node)) > MAX_FUNCTION_LINES
    }


def test_the_length_check_counts_the_body_without_its_docstring():
    statements = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    doc = '    """A docstring\n    over\n    lines."""\n'
    at_limit = ast.parse(f"def f():\n{doc}{statements}\n")
    over = ast.parse(f"async def g():\n{doc}{statements}\n    return 1\n")
    assert _long_functions(at_limit, "m") == {} and _long_functions(over, "m") == {"m:g": MAX_FUNCTION_LINES + 1}


def test_no_function_over_a_screen():
    found: dict[str, int] = {}
    for path in sorted(SRC.rglob("*.py")):
        found.update(_long_functions(ast.parse(path.read_text()), str(path.relative_to(SRC))))
    assert found == {}, f"functions over {MAX_FUNCTION_LINES} lines (docstrings excluded)"
