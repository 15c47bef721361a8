"""Cache hits of ``GET /api/v1/recommendations/`` in this process, one thread.

Each request goes through ``config.wsgi.application`` (every WSGI and Django
middleware, DRF, the view) against the configured PostgreSQL and Redis, so what is
timed is a gunicorn worker's share of a hit without the server loop and without
other threads competing for the GIL: per request the wall time and the thread's
CPU time (``time.thread_time``: the interpreter's work; waiting on PostgreSQL and
Redis is not in it). ``--profile`` adds a cProfile of the measured requests.

The members are the first ``members`` tokens of ``member_tokens``; one request each
first caches their answers (computed, so the serving bundle is loaded once, unless
their entries are still cached: ``RECOMMENDATIONS_CACHE_SECONDS``), then ``rounds``
rounds ask each member once. Impressions pushed to the Redis buffer are
dropped at the end (no beat runs here).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass

from django.conf import settings

from recommender.benchmarks.common import latency_stats, load_average
from recommender.benchmarks.endpoint import API_PATH, celery_queue_drop, member_tokens
from recommender.benchmarks.render import table


@dataclass
class HitParams:
    members: int = 40
    rounds: int = 20
    limit: int = 20
    seed: int = 42
    profile: bool = False


def _environ(token: str, limit: int) -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": API_PATH,
        "QUERY_STRING": f"limit={limit}",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": f"Token {token}",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def _get(application, token: str, limit: int) -> tuple[str, dict, bytes]:
    answer: dict = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = status, dict(headers)

    result = application(_environ(token, limit), start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return answer["status"], answer["headers"], body


def _answer(status: str, headers: dict) -> str:
    """What a request got, as counted: ``"200 hit"``, ``"200 miss"``, ``"401 None"``."""
    return f"{status.split()[0]} {headers.get('X-Cache')}"


def hit_benchmark(params: HitParams, progress=print) -> dict:
    from config.wsgi import application

    tokens = member_tokens(count=params.members, seed=params.seed)
    warm = Counter(_answer(*_get(application, t, params.limit)[:2]) for t in tokens)
    progress(f"warm-up: {dict(warm)}")
    profiler = cProfile.Profile() if params.profile else None
    walls, cpus, caches = [], [], Counter()
    for _ in range(params.rounds):
        for token in tokens:
            cpu, wall = time.thread_time(), time.perf_counter()
            if profiler is not None:
                profiler.enable()
            status, headers, _ = _get(application, token, params.limit)
            if profiler is not None:
                profiler.disable()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.thread_time() - cpu)
            caches[_answer(status, headers)] += 1
    caches = dict(caches)
    load = load_average()
    if settings.REDIS_URL:  # the embedded mode wrote its impressions directly
        celery_queue_drop()
    cpu_stats = latency_stats(cpus)
    wall_stats = latency_stats(walls)
    progress(
        f"{len(walls)} requests {caches}: wall p50 {wall_stats['p50_ms']} "
        f"p95 {wall_stats['p95_ms']} ms, CPU mean {cpu_stats['mean_ms']} "
        f"p50 {cpu_stats['p50_ms']} ms, load {load}"
    )
    section = {
        "kind": "hits",
        "title": "Cache hits in-process (one thread, through config.wsgi)",
        "markdown": table(
            ["requests", "answers", "wall p50 / p95 ms", "CPU mean / p50 ms", "load"],
            [
                [
                    len(walls),
                    ", ".join(f"{k}: {v}" for k, v in sorted(caches.items())),
                    f"{wall_stats['p50_ms']:.3f} / {wall_stats['p95_ms']:.3f}",
                    f"{cpu_stats['mean_ms']:.3f} / {cpu_stats['p50_ms']:.3f}",
                    str(load),
                ]
            ],
        ),
        "params": asdict(params),
        "answers": caches,
        "wall": wall_stats,
        "cpu": cpu_stats,
        "load_average": load,
    }
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(60)
        section["profile"] = out.getvalue()
    return section
