"""What every benchmark shares: the machine, latency statistics, the results files.

Results live in two files in one directory: ``BENCHMARKS.json`` (every section's
figures, keyed by section name, merged run after run) and ``BENCHMARKS.md`` (rendered
from the JSON; a hand-written block between ``<!-- notes -->`` and
``<!-- /notes -->`` survives re-rendering).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recommender.benchmarks.render import NOTES_END, NOTES_START, render_markdown

RESULTS_JSON = "BENCHMARKS.json"
RESULTS_MD = "BENCHMARKS.md"


def machine_describe() -> dict:
    """Cores, memory, CPU model, Python and the load average right now."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    memory_gib = 0.0
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory_gib = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load_average(),
    }


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (other jobs share this machine)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def latency_stats(seconds: Sequence[float] | np.ndarray) -> dict:
    """p50/p95/p99/mean/max in milliseconds and the sample count."""
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    if values.size == 0:
        return {"n": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "n": int(values.size),
        "p50_ms": round(float(p50), 4),
        "p95_ms": round(float(p95), 4),
        "p99_ms": round(float(p99), 4),
        "mean_ms": round(float(values.mean()), 4),
        "max_ms": round(float(values.max()), 4),
    }


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def results_load(out_dir: Path) -> dict:
    path = Path(out_dir) / RESULTS_JSON
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def results_save(*, out_dir: Path, sections: dict[str, dict]) -> tuple[Path, Path]:
    """Merge ``sections`` (name → section dict with ``title``, ``kind`` and figures)
    into the results JSON and re-render the markdown; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = results_load(out_dir)
    results.update(sections)
    json_path = out_dir / RESULTS_JSON
    json_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    md_path = out_dir / RESULTS_MD
    notes = ""
    if md_path.exists():
        text = md_path.read_text()
        if NOTES_START in text and NOTES_END in text:
            notes = text.split(NOTES_START, 1)[1].split(NOTES_END, 1)[0].strip("\n")
    md_path.write_text(render_markdown(results, notes=notes))
    return json_path, md_path
