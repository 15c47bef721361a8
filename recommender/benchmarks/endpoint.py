"""``GET /api/v1/recommendations/`` through gunicorn under load from ``wrk``.

The benchmark starts gunicorn (``config/gunicorn.conf.py``, workers and threads
from the environment as in production) on 127.0.0.1 with the current PostgreSQL
and Redis settings, and with the benchmark's URLconf
(:mod:`recommender.benchmarks.urls`: the project's URLs plus the naive baseline of
:mod:`recommender.benchmarks.naive`) so the baseline is served by the same server.
Load comes from Debian's ``wrk`` (one thread, closed loop of ``c`` connections,
``duration`` seconds per phase) with a Lua script that sends each request with the next
member's token. Phases:

* ``miss``: members never asked before in the run, the cache emptied first, so
  every answer is computed (the Lua script counts the ``X-Cache`` header to prove
  it);
* ``hit``: members whose answers the first miss phase cached;
* ``naive``: the baseline, with members not asked before.

Per phase: wrk's latency percentiles (client side, queueing included) and
requests/second; the server's own ``X-Process-Time``; the ``X-Cache`` and strategy
counts; per-stage seconds from the workers' ``recommendation_stage_seconds``
histograms (``/metrics``, differenced around each phase). Impression tasks queued
for Celery during the run (no worker runs during the benchmark) are removed from
the benchmark's Redis database after each phase.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

from recommender.benchmarks.common import latency_stats, load_average
from recommender.benchmarks.profiling import profile_start, profile_summary
from recommender.benchmarks.wrk import wrk_run

API_PATH = "/api/v1/recommendations/"
NAIVE_PATH = "/api/v1/bench/naive-recommendations/"
BENCHMARK_URLCONF = "recommender.benchmarks.urls"


@dataclass
class EndpointParams:
    users: int
    duration: int = 20
    connections: tuple[int, ...] = (1, 4)
    tokens: int = 20_000
    limit: int = 20
    port: int = 8766
    naive: bool = True
    seed: int = 42
    workers: int = 0  # 0 = WEB_CONCURRENCY or 2 (two cores)
    threads: int = 0  # 0 = GUNICORN_THREADS or 4
    timeout: int = 30
    hit_connections: tuple[int, ...] = ()  # default: connections plus 16
    profile: bool = False  # py-spy on one worker during the busiest miss phase


def _require_services() -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine.endswith("sqlite3") or not getattr(settings, "REDIS_URL", ""):
        raise RuntimeError(
            "--endpoint needs PostgreSQL and Redis: set DATABASE_URL and REDIS_URL"
        )
    if not shutil.which("wrk"):
        raise RuntimeError("--endpoint needs wrk (apt-get install wrk; make bench)")
    from registry.models import ModelKind
    from registry.selectors import model_get_active

    missing = [k for k in ModelKind.values if model_get_active(kind=k) is None]
    if missing:
        raise RuntimeError(
            f"no active {', '.join(missing)} model: run "
            "`AUTO_PROMOTE=true manage.py train_models` first"
        )


def member_tokens(*, count: int, seed: int) -> list[str]:
    """API tokens of ``count`` members with a visible profile (random, seeded),
    created for those without one."""
    from rest_framework.authtoken.models import Token

    from accounts.models import Profile

    ids = np.array(
        Profile.objects.filter(is_visible=True, user__is_active=True)
        .order_by("user_id")
        .values_list("user_id", flat=True)
    )
    if ids.size == 0:
        raise RuntimeError("no members: run seed_demo first")
    rng = np.random.default_rng(seed)
    chosen = [int(x) for x in rng.permutation(ids)[: min(count, ids.size)]]
    Token.objects.bulk_create(
        [Token(user_id=uid, key=secrets.token_hex(20)) for uid in chosen],
        ignore_conflicts=True,
        batch_size=5_000,
    )
    keys = dict(Token.objects.filter(user_id__in=chosen).values_list("user_id", "key"))
    return [keys[uid] for uid in chosen]


def _redis():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL)


def cache_clear() -> int:
    """Delete the per-member recommendation entries from the benchmark's Redis db
    (only keys named like ``recommender.cache.recommendations_cache_key``)."""
    client = _redis()
    keys = list(client.scan_iter(match="*recs:*", count=5_000))
    for start in range(0, len(keys), 5_000):
        client.delete(*keys[start : start + 5_000])
    return len(keys)


def celery_queue_drop() -> int:
    """Drop impressions queued on the benchmark's Redis db (Celery tasks or the
    impressions buffer list): no worker or beat runs during the benchmark."""
    client = _redis()
    name = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery") or "celery"
    dropped = 0
    queues = {name.encode(), b"celery"}
    # Impressions buffered in a Redis list for a beat task that does not run here.
    queues |= set(client.scan_iter(match="*impressions:queue*", count=1_000))
    for queue in queues:
        if client.type(queue) == b"list":
            dropped += int(client.llen(queue))
            client.delete(queue)
    return dropped


def _get(url: str, token: str | None = None, timeout: float = 30.0):
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Token {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, dict(response.headers), response.read()


def _stage_histograms(base: str) -> dict:
    """{stage: {"sum", "count", "buckets": {le: cumulative}}} from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        _, _, body = _get(base + "/metrics", timeout=10)
    except (urllib.error.URLError, OSError):
        return {}
    stages: dict[str, dict] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name != "recommendation_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage")
            entry = stages.setdefault(stage, {"sum": 0.0, "count": 0.0, "buckets": {}})
            if sample.name.endswith("_sum"):
                entry["sum"] += sample.value
            elif sample.name.endswith("_count"):
                entry["count"] += sample.value
            elif sample.name.endswith("_bucket"):
                le = sample.labels["le"]
                entry["buckets"][le] = entry["buckets"].get(le, 0.0) + sample.value
    return stages


def _stage_delta(before: dict, after: dict) -> dict:
    out = {}
    for stage, entry in after.items():
        prev = before.get(stage, {"sum": 0.0, "count": 0.0, "buckets": {}})
        count = entry["count"] - prev["count"]
        if count <= 0:
            continue
        total = entry["sum"] - prev["sum"]
        p95_le = None
        for le, value in sorted(entry["buckets"].items(), key=lambda x: float(x[0])):
            if value - prev["buckets"].get(le, 0.0) >= 0.95 * count:
                p95_le = float(le) * 1000
                break
        out[stage] = {
            "count": int(count),
            "mean_ms": round(total / count * 1000, 3),
            "p95_le_ms": p95_le,
        }
    return out


class Server:
    """gunicorn on 127.0.0.1:port with the naive view mounted; stopped on exit."""

    def __init__(self, params: EndpointParams, workdir: Path):
        self.params = params
        self.base = f"http://127.0.0.1:{params.port}"
        self.log_path = workdir / "gunicorn.log"
        env = dict(os.environ)
        env.update(
            GUNICORN_BIND=f"127.0.0.1:{params.port}",
            GUNICORN_TIMEOUT=str(max(params.timeout, 30)),
        )
        if params.naive:
            env["DJANGO_ROOT_URLCONF"] = BENCHMARK_URLCONF
        if params.workers:
            env["WEB_CONCURRENCY"] = str(params.workers)
        if params.threads:
            env["GUNICORN_THREADS"] = str(params.threads)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.workers = int(env.get("WEB_CONCURRENCY", "2"))
        self.threads = int(env.get("GUNICORN_THREADS", "4"))
        gunicorn = Path(sys.executable).parent / "gunicorn"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(gunicorn),
                "-c",
                str(Path(settings.BASE_DIR) / "config" / "gunicorn.conf.py"),
                "config.wsgi",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log_path}")
            try:
                status, _, _ = _get(self.base + "/health/live", timeout=2)
                if status == 200:
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"gunicorn not ready in {timeout:.0f}s; see {self.log_path}")

    def warm(self, tokens: list[str], limit: int, timeout: float = 180.0) -> dict:
        """Ask until every worker serves full answers (bundles loaded): 30 full
        answers in a row. Returns the strategies seen."""
        seen: dict[str, int] = {}
        in_a_row, i = 0, 0
        deadline = time.monotonic() + timeout
        while in_a_row < 30 and time.monotonic() < deadline:
            token = tokens[i % len(tokens)]
            i += 1
            try:
                _, headers, _ = _get(
                    f"{self.base}{API_PATH}?limit={limit}", token=token, timeout=60
                )
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
                continue
            strategy = headers.get("X-Recommendation-Strategy", "?")
            seen[strategy] = seen.get(strategy, 0) + 1
            in_a_row = in_a_row + 1 if strategy == "full" else 0
            if strategy != "full":
                time.sleep(0.2)
        return seen

    def worker_cpu_seconds(self) -> float:
        """User + system CPU seconds of the gunicorn workers so far."""
        import psutil

        total = 0.0
        try:
            for child in psutil.Process(self.proc.pid).children():
                times = child.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _phase_row(phase: str, connections: int, raw: dict, stages: dict) -> dict:
    seconds = raw["duration_us"] / 1e6
    served = raw["hits"] + raw["misses"]
    server = latency_stats(raw.get("process_times") or [])
    errors = sum(raw[k] for k in raw if k.startswith("errors_")) + raw["non_200"]
    return {
        "phase": phase,
        "connections": connections,
        "requests": int(raw["requests"]),
        "seconds": round(seconds, 2),
        "rps": round(raw["requests"] / seconds, 1) if seconds else None,
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p95_ms": round(raw["p95_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "mean_ms": round(raw["mean_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "server_p50_ms": server.get("p50_ms"),
        "server_p95_ms": server.get("p95_ms"),
        "server_p99_ms": server.get("p99_ms"),
        "hit_percent": round(100 * raw["hits"] / served, 1) if served else None,
        "errors": int(errors),
        "strategies": raw.get("strategies") or {},
        "stages": stages,
        "load_average": load_average(),
    }


def endpoint_benchmark(params: EndpointParams, progress=print) -> dict:
    _require_services()
    from accounts.models import Profile

    members = Profile.objects.count()
    if members < params.users * 0.9:
        raise RuntimeError(
            f"the database holds {members:,} members, not ~{params.users:,}: run "
            f"seed_demo --users {params.users} and train_models first"
        )
    progress(f"tokens for {params.tokens:,} members")
    tokens = member_tokens(count=params.tokens, seed=params.seed)
    miss_conns = list(params.connections)
    hit_conns = list(params.hit_connections or sorted({*params.connections, 16}))
    naive_conns = list(params.connections) if params.naive else []
    slices = 1 + len(miss_conns) + len(naive_conns)
    per = max(1, len(tokens) // slices)
    warm_tokens, rest = tokens[:per], tokens[per:]
    workdir = Path(tempfile.mkdtemp(prefix="kindred-bench-endpoint-"))
    server = Server(params, workdir)
    phases: list[dict] = []
    profiles: dict[str, list[dict]] = {}
    try:
        server.wait_ready()
        progress(f"gunicorn up ({server.workers} workers x {server.threads} threads)")
        # Each worker loads its bundle (the member store) on its first request:
        # minutes at 1,000,000 members on a loaded machine.
        seen = server.warm(
            warm_tokens, params.limit, timeout=max(180.0, params.users / 1_500)
        )
        progress(f"warm: {seen}")

        def run(phase, path, phase_tokens, conns, spy=False):
            before = _stage_histograms(server.base)
            cpu_before = server.worker_cpu_seconds()
            spy_out = workdir / "py-spy.txt"
            spy_proc = None
            if spy:
                import psutil

                children = psutil.Process(server.proc.pid).children()
                if children:
                    spy_proc = profile_start(
                        children[0].pid, max(1, params.duration - 2), spy_out
                    )
            raw = wrk_run(
                base=server.base,
                path=f"{path}?limit={params.limit}",
                tokens=phase_tokens,
                connections=conns,
                duration=params.duration,
                timeout=params.timeout,
                workdir=workdir,
            )
            cpu = server.worker_cpu_seconds() - cpu_before
            stages = _stage_delta(before, _stage_histograms(server.base))
            if spy_proc is not None:
                spy_proc.wait(timeout=60)
                profiles[phase] = profile_summary(spy_out)
                spy_out.unlink(missing_ok=True)
            row = _phase_row(phase, conns, raw, stages)
            row["queued_impression_tasks_dropped"] = celery_queue_drop()
            if row["requests"]:
                # CPU the gunicorn workers spent per request: unlike latency, hardly
                # inflated by other processes competing for the cores.
                row["worker_cpu_ms_per_request"] = round(
                    cpu * 1000 / row["requests"], 2
                )
            phases.append(row)
            progress(
                f"{phase} c={conns}: {row['requests']:,} req, {row['rps']} req/s, "
                f"p50 {row['p50_ms']} p95 {row['p95_ms']} p99 {row['p99_ms']} ms, "
                f"hit {row['hit_percent']}%, errors {row['errors']}, "
                f"worker CPU {row.get('worker_cpu_ms_per_request')} ms/req, "
                f"load {row['load_average']}"
            )
            return row

        cache_clear()
        celery_queue_drop()
        hit_pool: list[str] = []
        for i, conns in enumerate(miss_conns):
            chunk = rest[i * per : (i + 1) * per]
            spy = params.profile and conns == max(miss_conns)
            row = run("miss", API_PATH, chunk, conns, spy=spy)
            if not hit_pool:
                hit_pool = chunk[: max(1, min(row["requests"], 2_000, len(chunk)))]
        for conns in hit_conns:
            spy = params.profile and conns == max(hit_conns)
            run("hit", API_PATH, hit_pool, conns, spy=spy)
        offset = len(miss_conns) * per
        for i, conns in enumerate(naive_conns):
            chunk = rest[offset + i * per : offset + (i + 1) * per]
            run("naive", NAIVE_PATH, chunk, conns)
    finally:
        server.stop()
        cache_clear()
        celery_queue_drop()
    stages = {}
    for row in phases:
        if row["phase"] == "miss" and row["connections"] == max(miss_conns):
            stages = row["stages"]
    ratios = {}
    for conns in naive_conns:
        ours = _find(phases, "miss", conns)
        naive = _find(phases, "naive", conns)
        if ours and naive and not naive["requests"]:
            ratios[f"naive c={conns}"] = (
                f"no request completed in {params.duration} s "
                f"(ours: p50 {ours['p50_ms']} ms)"
            )
        elif ours and naive and ours["p95_ms"] and ours["rps"]:
            ratios[f"p50 c={conns}"] = round(naive["p50_ms"] / ours["p50_ms"], 1)
            ratios[f"p95 c={conns}"] = round(naive["p95_ms"] / ours["p95_ms"], 1)
            ratios[f"req/s c={conns} (ours/naive)"] = round(
                ours["rps"] / naive["rps"], 1
            )
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "kind": "endpoint",
        "users": members,
        "params": asdict(params)
        | {
            "workers": server.workers,
            "threads": server.threads,
            "wrk_threads": 1,
            "database": settings.DATABASES["default"]["NAME"],
            "hit_connections": hit_conns,
            "tokens": len(tokens),
        },
        "warm": seen,
        "phases": phases,
        "stages": stages,
        "ratios": ratios,
        "profile": profiles.get("miss", []),
        "profile_hit": profiles.get("hit", []),
    }


def _find(phases, phase, conns):
    return next(
        (r for r in phases if r["phase"] == phase and r["connections"] == conns), None
    )
