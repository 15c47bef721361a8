import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULES = tuple(
    sorted(
        path.stem
        for path in (REPO_ROOT / "recommender" / "ml").glob("*.py")
        if path.stem != "__init__"
    )
)


def test_the_list_covers_the_pipeline_modules():
    assert {"candidates", "filters", "graph", "peers", "recommend"} <= set(MODULES)


def test_every_ml_module_imports_without_django():
    imports = "; ".join(f"import recommender.ml.{name}" for name in MODULES)
    code = f"import sys; sys.modules['django'] = None; {imports}"

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
