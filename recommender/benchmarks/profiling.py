"""py-spy profiles of a running process, summarised per function."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def profile_start(pid: int, seconds: int, out: Path) -> subprocess.Popen | None:
    """``py-spy record`` of process ``pid`` (collapsed stacks) or None without it."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    return subprocess.Popen(
        [spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "200"]
        + ["-f", "raw", "-o", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=open(str(out) + ".log", "w"),  # noqa: SIM115 - lives with the child
    )


def profile_summary(path: Path, top: int = 40) -> list[dict]:
    """Inclusive share of samples per function (our code and the big libraries)
    from py-spy's collapsed stacks, busiest first; idle waiting excluded."""
    if not path.exists():
        return []
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if not any("recommender" in f or "rest_framework" in f for f in frames):
            continue  # the worker's idle loop, gunicorn's own bookkeeping
        n = int(count)
        total += n
        for frame in dict.fromkeys(frames):
            name, _, where = frame.partition(" (")
            where = where.rstrip(")")
            short = where.split("site-packages/")[-1].split("/work/main/")[-1]
            key = f"{name} ({short.rsplit(':', 1)[0]})"
            inclusive[key] = inclusive.get(key, 0) + n
    if not total:
        return []
    rows = sorted(inclusive.items(), key=lambda x: -x[1])
    return [
        {"function": k, "percent": round(100 * v / total, 1)}
        for k, v in rows
        if "recommender" in k
        or "rest_framework" in k
        or "sklearn" in k
        or "faiss" in k
        or "psycopg" in k
        or "redis" in k
        or "celery" in k
        or "kombu" in k
        or "django/db" in k
        or "middleware" in k
    ][:top]
