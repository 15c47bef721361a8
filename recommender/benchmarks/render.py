"""BENCHMARKS.md from the results JSON: one section per benchmark run and scale."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NOTES_START, NOTES_END = "<!-- notes -->", "<!-- /notes -->"

STAGE_ORDER = ["load", "features", "embeddings", "index", "ranking", "evaluate"]
ORDER = {"search": 0, "endpoint": 1, "training": 2, "profile": 3}

INTRO = """# Benchmarks

Figures measured by `python manage.py benchmark` (see its `--help`; `make bench`
installs the optional tools: pgserver, py-spy, psutil, Debian's wrk). Every section
states the machine, the load average while it ran (the benchmark machine is shared
with other jobs: other processes' load inflates latencies) and every parameter; the
raw figures are in `BENCHMARKS.json` beside this file. Targets are DESIGN.md's
"Performance targets".
"""


def render_markdown(results: dict, *, notes: str = "") -> str:
    parts = [INTRO, NOTES_START, notes or "_(notes: add conclusions here)_", NOTES_END]
    names = sorted(
        results,
        key=lambda n: (
            ORDER.get(results[n].get("kind"), 9),
            results[n].get("users", 0),
            n,
        ),
    )
    for name in names:
        section = results[name]
        render = RENDERERS.get(section.get("kind"), _render_generic)
        parts.append(render(name, section))
    return "\n\n".join(parts).rstrip() + "\n"


def _machine_line(section: dict) -> str:
    m = section.get("machine", {})
    return (
        f"Run {section.get('started', '?')} (took {fmt(section.get('seconds'))} s) on "
        f"{m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB, "
        f"{m.get('cpu', '?')}; Python {m.get('python', '?')}; load average at start "
        f"{m.get('load_average', '?')}, at end {section.get('load_average_end', '?')}."
    )


def _ms(stats: dict | None, key: str):
    return (stats or {}).get(key)


def _render_search(name: str, s: dict) -> str:
    p = s.get("params", {})
    lines = [
        f"## Candidate search: {s['users']:,} members x {s['dim']} dims",
        _machine_line(s),
        "",
        f"Vectors: {s['vectors']['source']} (made in "
        f"{fmt(s['vectors']['seconds_to_make'])} s; learned taste share "
        f"{s['vectors']['learned_taste_share']}). {p.get('queries')} queries, "
        f"{p.get('repeat')} passes each, one query at a time on one thread "
        "(faiss.omp_set_num_threads(1), BLAS limited to 1 thread); builds with "
        f"{p.get('build_threads')} threads. Recall against exact inner-product search "
        "on the same queries. Memory: serialised FAISS index / RSS growth, numpy "
        "array bytes, pgvector index relation size.",
        "",
    ]
    ks = p.get("ks", [100, 500])
    headers = ["method", "params", "build s", "memory MiB"]
    for k in ks:
        headers += [f"k={k} p50 ms", f"k={k} p95 ms", f"k={k} p99 ms"]
    recall_keys = sorted({key for r in s["rows"] for key in r.get("recall", {})})
    headers += recall_keys + ["load"]
    rows = []
    for r in s["rows"]:
        params = ", ".join(
            f"{k}={v}"
            for k, v in r["params"].items()
            if k not in ("version", "shared_buffers_mb")
        )
        cells = [r["method"], params, r["build_seconds"], r["memory_bytes"] / 2**20]
        for k in ks:
            stats = r["latency"].get(f"k={k}")
            cells += [
                _ms(stats, "p50_ms"),
                _ms(stats, "p95_ms"),
                _ms(stats, "p99_ms"),
            ]
        cells += [r["recall"].get(key) for key in recall_keys]
        cells.append((r.get("load_average") or ["?"])[0])
        rows.append(cells)
    lines.append(table(headers, rows))
    notes = []
    for r in s["rows"]:
        line = f"- {r['method']}: {r.get('notes')}"
        if r.get("notes") and line not in notes:
            notes.append(line)
    if s.get("pgvector_error"):
        notes.append(f"- {s['pgvector_error']}")
    if notes:
        lines += ["", *notes]
    best = s.get("serving_default") or {}
    if best:
        lines += [
            "",
            f"Fastest in-process method with recall@100 >= 0.95: **{best['method']}** "
            f"({best['params']}), p50 {fmt(best['p50_ms'], 3)} ms at k=100.",
        ]
    return "\n".join(lines)


def _render_endpoint(name: str, s: dict) -> str:
    p = s.get("params", {})
    label = name.split("-", 2)[2] if name.count("-") >= 2 else ""
    lines = [
        f"## Recommendation endpoint under load: {s['users']:,} members"
        + (f" ({label})" if label else ""),
        _machine_line(s),
        "",
        f"gunicorn ({p.get('workers')} workers x {p.get('threads')} threads, "
        f"config/gunicorn.conf.py) on 127.0.0.1, PostgreSQL + Redis cache; load from "
        f"wrk ({p.get('wrk_threads')} thread, {p.get('duration')} s per phase, "
        f"timeout {p.get('timeout')} s) rotating {p.get('tokens'):,} members' tokens "
        f"(each miss phase asks for members not yet asked for), limit="
        f"{p.get('limit')}. Latency is wrk's (client side, includes queueing); "
        "server time is the X-Process-Time header. The naive baseline is "
        "recommender/benchmarks/naive.py (SQL filters, then brute-force cosine "
        "similarity over the candidates' embedding rows), served by the same "
        "gunicorn only while the benchmark runs.",
        "",
    ]
    headers = [
        "phase",
        "conns",
        "requests",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "server p50 ms",
        "server p95 ms",
        "cache hit %",
        "worker CPU ms/req",
        "errors",
        "strategies",
        "load",
    ]
    rows = []
    for r in s["phases"]:
        rows.append(
            [
                r["phase"],
                r["connections"],
                r.get("requests"),
                r.get("rps"),
                r.get("p50_ms"),
                r.get("p95_ms"),
                r.get("p99_ms"),
                r.get("max_ms"),
                r.get("server_p50_ms"),
                r.get("server_p95_ms"),
                r.get("hit_percent"),
                r.get("worker_cpu_ms_per_request"),
                r.get("errors"),
                ", ".join(f"{k} {v}" for k, v in (r.get("strategies") or {}).items()),
                (r.get("load_average") or ["?"])[0],
            ]
        )
    lines.append(table(headers, rows))
    ratios = s.get("ratios") or {}
    if ratios:
        lines += [
            "",
            "Ratios (naive / ours, same run, same connections): "
            + "; ".join(
                f"{k}: {fmt(v, 1)}x" if isinstance(v, int | float) else f"{k}: {v}"
                for k, v in ratios.items()
            )
            + ".",
        ]
    stages = s.get("stages") or {}
    if stages:
        lines += [
            "",
            "Per-stage server time of the computations in the busiest cache-miss "
            "phase, from the workers' own `recommendation_stage_seconds` histograms "
            "(`/metrics`, differenced around the phase; mean, and the histogram "
            "bucket holding p95):",
            "",
            table(
                ["stage", "count", "mean ms", "p95 <= ms"],
                [
                    [k, v.get("count"), v.get("mean_ms"), v.get("p95_le_ms")]
                    for k, v in stages.items()
                ],
            ),
        ]
    for key, label in (("profile", "miss"), ("profile_hit", "hit")):
        profile = s.get(key) or []
        if not profile:
            continue
        lines += [
            "",
            f"py-spy of one worker during the busiest {label} phase (share of the "
            "samples in request handling spent inside each function, callees "
            "included):",
            "",
            table(
                ["function", "% of request samples"],
                [[p["function"], p["percent"]] for p in profile],
            ),
        ]
    return "\n".join(lines)


def _render_training(name: str, s: dict) -> str:
    p = s.get("params", {})
    lines = [
        f"## Training pipeline: {s['users']:,} members",
        _machine_line(s),
        "",
        f"`manage.py train_models` (the nightly chain, run synchronously) in a "
        f"subprocess on PostgreSQL {p.get('database', '')}, "
        f"{fmt(s.get('interactions'))} interactions; EMBEDDING_DIM="
        f"{p.get('embedding_dim')}. Stage seconds are the pipeline's own "
        "(TrainingRun.summary); peak memory is the subprocess's maximum RSS. "
        f"{p.get('repeat', 1)} run(s): median shown.",
        "",
    ]
    headers = ["stage", "seconds (median)", "runs", "peak RSS MiB in stage"]
    rows = [
        [
            stage,
            v.get("median"),
            ", ".join(fmt(x, 1) for x in v.get("all", [])),
            v.get("peak_rss_mib"),
        ]
        for stage, v in sorted(
            (s.get("stages") or {}).items(),
            key=lambda item: (
                STAGE_ORDER.index(item[0]) if item[0] in STAGE_ORDER else 99
            ),
        )
    ]
    rows.append(
        [
            "**wall (process)**",
            s.get("wall_seconds_median"),
            ", ".join(fmt(x, 1) for x in s.get("wall_seconds", [])),
            "",
        ]
    )
    rows.append(
        [
            "**peak RSS MiB**",
            s.get("peak_rss_mib_max"),
            ", ".join(fmt(x, 0) for x in s.get("peak_rss_mib", [])),
            "",
        ]
    )
    if s.get("seed_seconds"):
        rows.append(["(seed_demo, not part of training)", s["seed_seconds"], "", ""])
    lines.append(table(headers, rows))
    notes = [
        f"- {stage}: {v['note']}"
        for stage, v in (s.get("stages") or {}).items()
        if v.get("note")
    ]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _render_generic(name: str, s: dict) -> str:
    body = s.get("markdown") or "```\n" + str(s)[:2000] + "\n```"
    return f"## {s.get('title', name)}\n{_machine_line(s)}\n\n{body}"


RENDERERS = {
    "search": _render_search,
    "endpoint": _render_endpoint,
    "training": _render_training,
}


def fmt(value, digits: int = 2) -> str:
    """A table cell: numbers rounded, thousands separated; ``—`` for missing."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(cell) for cell in row) + " |")
    return "\n".join(lines)
