import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULES = (
    "artifacts",
    "data",
    "embeddings",
    "features",
    "index",
    "metrics",
    "pipeline",
    "ranking",
    "synthetic",
)


def test_every_ml_module_imports_without_django():
    imports = "; ".join(f"import recommender.ml.{name}" for name in MODULES)
    code = f"import sys; sys.modules['django'] = None; {imports}"

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
