"""The package's shape: the layer contract, no import cycle at any depth, small modules, a short top level."""
import ast
import logging
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "easycls"


def test_the_layer_contract_holds():
    importlinter = pytest.importorskip("importlinter.cli")
    loggers = [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    enabled = [lg for lg in loggers if not lg.disabled]
    try:
        assert importlinter.lint_imports(config_filename=str(PACKAGE.parent / "pyproject.toml")) == 0
    finally:  # lint_imports configures logging with dictConfig, which disables every logger that exists
        for logger in enabled:
            logger.disabled = False


def _import_graph():
    modules = {".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): f
               for f in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = ".".join(base[:len(base) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module
                targets |= {mod} | {f"{mod}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
        # a package's __init__ is its public face; the modules behind it carry the real edges
        edges[name] = {t for t in targets if t in modules and t != name and modules[t].name != "__init__.py"}
    return edges


def test_no_import_cycle_at_any_depth():
    edges = _import_graph()

    def reaches(start, goal):
        stack, seen = [start], set()
        while stack:
            node = stack.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(edges[node])
        return False

    cycles = [(a, b) for a in edges for b in edges[a] if reaches(b, a)]
    assert cycles == []


def test_modules_stay_small():
    sizes = {str(p.relative_to(PACKAGE)): p.read_text().count("\n") for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 300} == {}


def test_the_top_level_holds_at_most_a_dozen_entries():
    entries = [p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 12, sorted(entries)
