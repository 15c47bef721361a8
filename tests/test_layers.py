"""Who may import whom: the registry is generic, config's kernel names no app,
only the benchmark's URLconf mounts the naive baseline, and starting Django loads
no serving code.

Read from the source (every ``import``, at module level or inside a function), so
a lazy import cannot hide an edge.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "interactions", "recommender", "registry")
# The roof names the apps (INSTALLED_APPS, include(), autodiscover): see
# config/__init__.py.
CONFIG_ROOF = {"settings.py", "test_settings.py", "urls.py", "celery.py", "wsgi.py"}


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _sources(folder: str):
    return sorted(
        path for path in (ROOT / folder).rglob("*.py") if "migrations" not in path.parts
    )


def _top(name: str) -> str:
    return name.split(".", 1)[0]


@pytest.mark.parametrize("path", _sources("registry"), ids=str)
def test_the_registry_imports_no_other_app(path):
    others = {
        name for name in _imported(path) if _top(name) in set(APPS) - {"registry"}
    }
    assert not others, f"{path.relative_to(ROOT)} imports {sorted(others)}"


@pytest.mark.parametrize(
    "path",
    [path for path in _sources("config") if path.name not in CONFIG_ROOF],
    ids=str,
)
def test_the_config_kernel_imports_no_app(path):
    apps = {name for name in _imported(path) if _top(name) in APPS}
    assert not apps, f"{path.relative_to(ROOT)} imports {sorted(apps)}"


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
