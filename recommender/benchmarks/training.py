"""The nightly training pipeline at scale: ``manage.py train_models`` in a subprocess.

Per run: the process's wall time and peak RSS (``os.wait4``'s ``ru_maxrss``), the
pipeline's own stage seconds (``TrainingRun.summary``), and the peak RSS during each
stage (psutil samples every 0.2 s, attributed to the stage the pipeline's progress
lines say is running; "load" is reading members and interactions). The database is
``--database-template`` formatted with the scale (created, migrated and seeded with
``seed_demo`` when it holds fewer members), or the current one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

STAGE_LINE = re.compile(r"stage (?:\d+/\d+ )?(\w+)…")


@dataclass
class TrainingParams:
    users: int
    repeat: int = 1
    seed: int = 42
    database_template: str = ""
    interactions_per_user: int = 20


def _database_url(params: TrainingParams) -> str:
    if params.database_template:
        return params.database_template.format(users=params.users)
    url = os.environ.get("DATABASE_URL", "")
    if not url or settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        raise RuntimeError(
            "--training needs PostgreSQL: set DATABASE_URL or --database-template"
        )
    return url


def _manage(args: list[str], env: dict, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )


def _ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def _scalar(url: str, sql: str):
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    return row[0] if row else None


def _run_tracked(args: list[str], env: dict, progress) -> dict:
    """Run a manage.py command; wall seconds, peak RSS (MiB) overall and per stage,
    and its output."""
    import psutil

    started = time.perf_counter()
    proc = _manage(args, env, None)
    current = {"stage": "load"}
    peaks: dict[str, float] = {}
    lines: list[str] = []
    done = threading.Event()

    def sample():
        try:
            handle = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                rss = handle.memory_info().rss / 2**20
            except psutil.Error:
                break
            stage = current["stage"]
            peaks[stage] = max(peaks.get(stage, 0.0), rss)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in proc.stdout:
        lines.append(line.rstrip())
        match = STAGE_LINE.search(line)
        if match:
            current["stage"] = match.group(1)
        if "stage" in line or "loaded" in line:
            progress("  " + line.strip())
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} failed ({proc.returncode}):\n"
            + "\n".join(lines[-30:])
        )
    return {
        "wall_seconds": round(wall, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "stage_peak_rss_mib": {k: round(v, 1) for k, v in peaks.items()},
        "output": lines,
    }


def training_benchmark(params: TrainingParams, progress=print) -> dict:
    url = _database_url(params)
    env = dict(os.environ, DATABASE_URL=url, AUTO_PROMOTE="true")
    seed_seconds = None
    if params.database_template:
        _ensure_database(url)
        progress(f"migrating {url.rsplit('/', 1)[1]}")
        _run_tracked(["migrate", "--noinput", "-v", "0"], env, progress)
    members = _scalar(url, "SELECT count(*) FROM accounts_profile")
    if members < params.users:
        if not params.database_template:
            raise RuntimeError(
                f"the database holds {members:,} members, not {params.users:,}: seed "
                "it (seed_demo --users N) or pass --database-template"
            )
        progress(f"seeding {params.users:,} members (seed_demo)")
        seeded = _run_tracked(
            [
                "seed_demo",
                "--users",
                str(params.users),
                "--seed",
                str(params.seed),
                "--interactions-per-user",
                str(params.interactions_per_user),
                "--flush",
            ],
            env,
            progress,
        )
        seed_seconds = seeded["wall_seconds"]
        members = _scalar(url, "SELECT count(*) FROM accounts_profile")
    interactions = _scalar(url, "SELECT count(*) FROM interactions_interaction")
    runs = []
    for i in range(params.repeat):
        progress(f"train_models run {i + 1}/{params.repeat} on {members:,} members")
        run = _run_tracked(["train_models"], env, progress)
        summary = _scalar(
            url, "SELECT summary FROM recommender_trainingrun ORDER BY id DESC LIMIT 1"
        )
        run["stages"] = {
            name: (value or {}).get("seconds")
            for name, value in ((summary or {}).get("stages") or {}).items()
        }
        run["total_seconds"] = (summary or {}).get("total_seconds")
        run["output"] = run["output"][-40:]
        runs.append(run)
        progress(
            f"  wall {run['wall_seconds']:.1f}s, "
            f"peak RSS {run['peak_rss_mib']:,.0f} MiB"
        )
    stage_names = list(runs[0]["stages"])
    stages = {}
    for name in stage_names:
        values = [r["stages"].get(name) or 0.0 for r in runs]
        stages[name] = {
            "median": round(float(np.median(values)), 2),
            "all": values,
            "peak_rss_mib": max(r["stage_peak_rss_mib"].get(name, 0.0) for r in runs),
        }
    stages["load"] = {
        "median": round(
            float(
                np.median([r["wall_seconds"] - sum(r["stages"].values()) for r in runs])
            ),
            2,
        ),
        "all": [round(r["wall_seconds"] - sum(r["stages"].values()), 2) for r in runs],
        "peak_rss_mib": max(r["stage_peak_rss_mib"].get("load", 0.0) for r in runs),
        "note": "process start, Django setup, reading the data, registration "
        "(wall minus the stages)",
    }
    walls = [r["wall_seconds"] for r in runs]
    peaks = [r["peak_rss_mib"] for r in runs]
    return {
        "kind": "training",
        "users": int(members),
        "interactions": int(interactions),
        "params": asdict(params)
        | {
            "database": url.rsplit("/", 1)[1],
            "embedding_dim": int(
                env.get("EMBEDDING_DIM") or settings.KINDRED["EMBEDDING_DIM"]
            ),
        },
        "seed_seconds": seed_seconds,
        "stages": stages,
        "wall_seconds": walls,
        "wall_seconds_median": round(float(np.median(walls)), 2),
        "peak_rss_mib": peaks,
        "peak_rss_mib_max": max(peaks),
        "runs": runs,
    }
