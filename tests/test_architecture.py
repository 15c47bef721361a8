"""The layout's rules, read from the source: no import cycles between our modules,
who may import whom (the ML library free of Django, a generic registry, a config
kernel that names no app), modules small enough to read, and nothing heavy loaded
when Django starts.

Imports are read with ``ast`` — every ``import`` and ``from … import`` anywhere in
a module, inside functions included: an import deferred into a function still
makes the two modules depend on each other, it only hides the cycle from Python.
Only imports under ``if TYPE_CHECKING:`` (annotations, never run) are left out.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "config", "interactions", "recommender", "registry")
APP_NAMES = ("accounts", "interactions", "recommender", "registry")
# The roof of config names the apps (INSTALLED_APPS, include(), autodiscover): see
# config/__init__.py. The rest of config is the kernel every app may import.
CONFIG_ROOF = {
    "config.settings",
    "config.test_settings",
    "config.urls",
    "config.celery",
    "config.wsgi",
}
MAX_LINES = 550  # "about 500"
LONGER_ALLOWED = {"recommender.ml.synthetic"}  # the planted-data generator


def _modules() -> dict[str, Path]:
    modules = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that ``name`` imports (a ``from package import module`` counts
    as importing the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` imports a.b.c; count the deepest module of ours.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _import_nodes(tree: ast.AST):
    """Every import node of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imported(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]
    ]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles(graph):
    assert _cycles(graph) == []


def test_the_ml_library_imports_nothing_of_ours_outside_it(graph):
    # recommender/ml is the pure library (numpy, scikit-learn, FAISS; no Django):
    # serving, training and evaluate adapt it, never the other way round.
    outside = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name.startswith("recommender.ml")
        for target in targets
        if not target.startswith("recommender.ml")
    )
    assert outside == []


def test_no_module_is_too_long_to_read():
    long = {
        name: lines
        for name, path in _modules().items()
        if name not in LONGER_ALLOWED
        and (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def _edges(graph, *, source, target) -> list[str]:
    return sorted(
        f"{name} -> {imported}"
        for name, imports in graph.items()
        if source(name)
        for imported in imports
        if target(imported)
    )


def test_the_registry_imports_no_other_app(graph):
    others = set(APP_NAMES) - {"registry"}
    assert (
        _edges(
            graph,
            source=lambda name: name.split(".")[0] == "registry",
            target=lambda name: name.split(".")[0] in others,
        )
        == []
    )


def test_the_config_kernel_imports_no_app(graph):
    assert (
        _edges(
            graph,
            source=lambda name: (
                name.split(".")[0] == "config" and name not in CONFIG_ROOF
            ),
            target=lambda name: name.split(".")[0] in APP_NAMES,
        )
        == []
    )


def test_the_project_urls_know_no_benchmark():
    assert "benchmarks" not in (ROOT / "config" / "urls.py").read_text()


def test_starting_django_loads_neither_serving_nor_faiss():
    # Every process starts Django (admin autodiscovery included); the serving
    # package, FAISS and scikit-learn load on the first recommendation only.
    code = (
        "import sys, django; django.setup(); "
        "print(sorted(m for m in ('faiss', 'sklearn', 'recommender.serving') "
        "if m in sys.modules))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.test_settings"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
