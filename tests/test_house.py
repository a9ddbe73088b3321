"""The house rules that keep the tree readable: no import cycles, a layout table that matches the tree,
every script answers --help, and the one-place-for-each-concept rules that a grep can check."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "fastnst"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every fastnst module ``path`` imports, at module level or inside functions (lazy imports count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the modules importing it runs: what it names, and their packages' ``__init__`` (except its own)."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        for target in _imports(path, name, known):
            edges.add(target)
            parts = target.split(".")
            edges.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in known and p not in own)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_fastnst_has_no_import_cycles_not_even_through_lazy_imports():
    graph = import_graph()
    assert len(graph) > 30 and "fastnst.stylize.stylizer" in graph["fastnst.stylize.pipeline"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def _layout_rows() -> dict[str, str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `([^`]+)` \| (.+?) \|$", section, re.M)}


def test_the_readme_layout_table_names_every_module_and_nothing_else():
    rows = _layout_rows()
    modules = {str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if p.name not in ("__main__.py",)}
    packages = {str(p.parent.relative_to(REPO)) + "/" for p in PACKAGE.rglob("__init__.py")}
    listed = {name for name in rows if name.startswith("fastnst")}
    expected = {m for m in modules if not m.endswith("__init__.py")} | (packages - {"fastnst/"})
    assert listed == expected, (f"missing from README's layout: {sorted(expected - listed)}; "
                                f"listed but absent: {sorted(listed - expected)}")


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "scripts").glob("*.py")))
def test_every_script_answers_help(script):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / script), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and len(done.stdout.splitlines()) >= 3


def test_no_module_spells_out_the_first_line_of_an_exception_or_the_torchrun_rank_itself():
    """One place each: ``fastnst.errors.first_line`` and ``fastnst.device.torchrun_rank``."""
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name != "errors.py":
            assert ".splitlines()[0]" not in text, f"{path}: use fastnst.errors.first_line"
        if path.name != "device.py":
            assert 'environ.get("RANK"' not in text and "environ[\"WORLD_SIZE\"]" not in text, \
                f"{path}: use fastnst.device.torchrun_rank"
