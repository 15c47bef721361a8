"""Candidate search side by side: exact numpy, FAISS Flat / IVF / HNSW, pgvector HNSW.

The vectors are what serving searches: the appeal vectors of the embedding stage as
the index and members' taste vectors as the queries (``recommender.ml.embeddings``),
trained on synthetic members and interactions (``recommender.ml.synthetic``, ~20
interactions per member) at the benchmark's scale — not random vectors. They are
cached as ``.npz`` under the cache directory, keyed by (users, dim, seed).

Each method: build time, memory, single-query latency on one thread (p50/p95/p99
over ``repeat`` passes over the query set) at each k, and recall@k against exact
inner-product search on the same queries. pgvector runs inside a PostgreSQL that the
PyPI package ``pgserver`` ships and starts on a Unix socket in a temporary directory;
its latency includes the client round trip (psycopg, prepared statement).
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from recommender.benchmarks.common import latency_stats, load_average


@dataclass
class SearchParams:
    users: int
    dim: int = 64
    seed: int = 42
    interactions_per_user: int = 20
    queries: int = 500
    repeat: int = 3
    ks: tuple[int, ...] = (100, 500)
    recall_k: int = 100
    ivf_nprobe: tuple[int, ...] = (16, 64, 256, 512)
    # (M, efConstruction): the serving build's (recommender.ml.index) and a denser one
    hnsw_configs: tuple[tuple[int, int], ...] = ((32, 80), (48, 200))
    hnsw_ef_search: tuple[int, ...] = (128, 256, 512, 1024)
    pgvector: bool = True
    pg_m: int = 16
    pg_ef_construction: int = 64
    pg_ef_search: tuple[int, ...] = (100, 200, 500)
    build_threads: int = 2
    cache_dir: str = ""
    vectors: str = "embedding"  # "embedding" (the real stage) or "random"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchRow:
    method: str
    params: dict = field(default_factory=dict)
    build_seconds: float = 0.0
    memory_bytes: int = 0
    latency: dict = field(default_factory=dict)  # "k=100" -> latency_stats
    recall: dict = field(default_factory=dict)  # "recall@100" -> float
    notes: str = ""
    load_average: list = field(default_factory=list)


def vectors_make(params: SearchParams, progress=print) -> dict:
    """{"index": appeal float32 [n, d], "queries": taste float32 [q, d], "ids",
    "seconds", "source"}; cached on disk when ``params.cache_dir`` is set."""
    cache = None
    if params.cache_dir:
        cache = Path(params.cache_dir) / (
            f"search-vectors-{params.vectors}-{params.users}x{params.dim}"
            f"-s{params.seed}.npz"
        )
        if cache.exists():
            data = np.load(cache)
            progress(f"vectors from cache {cache}")
            return {
                "index": data["index"],
                "queries_pool": data["queries_pool"],
                "ids": data["ids"],
                "seconds": float(data["seconds"]),
                "source": str(data["source"]),
                "has_taste_share": float(data["has_taste_share"]),
            }
    started = time.perf_counter()
    rng = np.random.default_rng(params.seed)
    if params.vectors == "random":
        index = rng.standard_normal((params.users, params.dim), dtype=np.float32)
        index /= np.linalg.norm(index, axis=1, keepdims=True)
        pool = rng.standard_normal((params.users, params.dim), dtype=np.float32)
        pool /= np.linalg.norm(pool, axis=1, keepdims=True)
        ids = np.arange(1, params.users + 1, dtype=np.int64)
        source = "random unit vectors (normal, normalised)"
        has_taste_share = 0.0
    else:
        from recommender.ml import synthetic
        from recommender.ml.data import from_synthetic
        from recommender.ml.embeddings import (
            content_vectors,
            train_embeddings,
            vectors_for_index,
        )
        from recommender.ml.features import build_feature_store

        progress(f"synthetic data: {params.users:,} members")
        dataset = synthetic.generate_dataset(
            n_members=params.users,
            seed=params.seed,
            interactions_per_member=params.interactions_per_user,
        )
        members, interactions = from_synthetic(dataset)
        del dataset
        progress(f"embedding stage: {interactions.m:,} interactions, d={params.dim}")
        store = build_feature_store(
            members, interactions, now_ts=float(interactions.ts.max()) + 1
        )
        model = train_embeddings(
            members.user_id,
            interactions,
            content_vectors(store),
            dim=params.dim,
            seed=params.seed,
            vocabulary=store.vocabulary,
        )
        index = vectors_for_index(model)
        pool = np.ascontiguousarray(model.taste, dtype=np.float32)
        ids = model.user_id.astype(np.int64)
        has_taste_share = float(model.has_taste.mean())
        source = (
            "embedding stage (recommender.ml.embeddings) on synthetic members "
            f"(recommender.ml.synthetic, ~{params.interactions_per_user} "
            "interactions each): appeal vectors indexed, taste vectors as queries"
        )
        del store, members, interactions, model
    seconds = time.perf_counter() - started
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            cache,
            index=index,
            queries_pool=pool,
            ids=ids,
            seconds=seconds,
            source=source,
            has_taste_share=has_taste_share,
        )
    return {
        "index": index,
        "queries_pool": pool,
        "ids": ids,
        "seconds": seconds,
        "source": source,
        "has_taste_share": has_taste_share,
    }


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # the bench requirements bring psutil; resource is a fallback
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _time_queries(
    search: Callable[[np.ndarray, int], np.ndarray],
    queries: np.ndarray,
    k: int,
    repeat: int,
) -> tuple[dict, list[np.ndarray]]:
    """Latency stats of ``search(q, k)`` one query at a time over ``repeat`` passes,
    and the ids found in the first pass."""
    for q in queries[: min(10, len(queries))]:  # warm caches and prepared plans
        search(q, k)
    samples: list[float] = []
    found: list[np.ndarray] = []
    per_pass: list[float] = []
    for r in range(repeat):
        pass_samples = []
        for q in queries:
            started = time.perf_counter()
            ids = search(q, k)
            pass_samples.append(time.perf_counter() - started)
            if r == 0:
                found.append(np.asarray(ids))
        samples.extend(pass_samples)
        per_pass.append(float(np.median(pass_samples)) * 1000)
    stats = latency_stats(samples)
    stats["pass_p50_ms"] = [round(x, 4) for x in per_pass]
    return stats, found


def _score_recall(found: list[np.ndarray], kth: np.ndarray, scores_of, k: int) -> float:
    """Share of the k results scoring at least the exact k-th score (minus float
    noise): recall that counts a tied neighbour as a hit."""
    hits = [
        (scores_of(i, f[:k]) >= kth[i] - 1e-5).sum() / k for i, f in enumerate(found)
    ]
    return round(float(np.mean(hits)), 4)


def _recall(found: list[np.ndarray], truth: np.ndarray, k: int) -> float:
    hits = [np.isin(t[:k], f[:k]).sum() / k for f, t in zip(found, truth, strict=True)]
    return round(float(np.mean(hits)), 4)


def search_benchmark(params: SearchParams, progress=print) -> dict:
    """Run every method at ``params.users`` and return the section's figures."""
    from threadpoolctl import threadpool_limits

    vectors = vectors_make(params, progress=progress)
    base, ids = vectors["index"], vectors["ids"]
    n, d = base.shape
    rng = np.random.default_rng(params.seed + 1)
    pool = vectors["queries_pool"]
    queries = pool[
        np.sort(rng.choice(pool.shape[0], size=params.queries, replace=False))
    ]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    kmax = max(max(params.ks), params.recall_k)

    faiss.omp_set_num_threads(params.build_threads)
    exact = faiss.IndexFlatIP(d)
    exact.add(base)
    truth_scores, truth_rows = exact.search(queries, kmax)
    truth = ids[truth_rows]
    kth = truth_scores[:, params.recall_k - 1]

    def scores_of(i: int, found_ids: np.ndarray) -> np.ndarray:
        rows = np.searchsorted(ids, found_ids)
        return base[rows] @ queries[i]

    del exact
    rows: list[SearchRow] = []

    def measure(row: SearchRow, search, *, ks=params.ks) -> SearchRow:
        faiss.omp_set_num_threads(1)
        with threadpool_limits(limits=1):
            for k in ks:
                stats, found = _time_queries(search, queries, k, params.repeat)
                row.latency[f"k={k}"] = stats
                if k >= params.recall_k:
                    row.recall[f"recall@{params.recall_k}"] = _recall(
                        found, truth, params.recall_k
                    )
                    row.recall[f"tie-aware recall@{params.recall_k}"] = _score_recall(
                        found, kth, scores_of, params.recall_k
                    )
                if k == max(ks) and k != params.recall_k:
                    row.recall[f"recall@{k}"] = _recall(found, truth, k)
        row.load_average = load_average()
        progress(
            f"{row.method} {row.params}: "
            + ", ".join(f"{k} p50 {v['p50_ms']:.3f} ms" for k, v in row.latency.items())
            + f", {row.recall}"
        )
        faiss.omp_set_num_threads(params.build_threads)
        return row

    # Exact numpy brute force (what the serving code would do without an index).
    def numpy_search(q, k):
        scores = base @ q
        top = np.argpartition(-scores, k)[:k]
        return ids[top[np.argsort(-scores[top])]]

    rows.append(
        measure(
            SearchRow(
                method="numpy exact",
                params={"op": "matmul + argpartition"},
                memory_bytes=int(base.nbytes),
            ),
            numpy_search,
        )
    )

    def faiss_row(method: str, build, knob=None, values=()):
        gc.collect()
        rss = _rss()
        started = time.perf_counter()
        index = build()
        build_seconds = time.perf_counter() - started
        memory = max(len(faiss.serialize_index(index)), _rss() - rss)

        def search(q, k):
            _, found = index.search(q.reshape(1, -1), k)
            return ids[found[0][found[0] >= 0]]

        for value in values or [None]:
            extra = {}
            if knob is not None and value is not None:
                extra = knob(index, value)
            row = SearchRow(
                method=method,
                params=extra | _describe(index),
                build_seconds=round(build_seconds, 3),
                memory_bytes=int(memory),
            )
            rows.append(measure(row, search))
        index = None  # noqa: F841 - free it before the next build
        gc.collect()

    def flat():
        index = faiss.IndexFlatIP(d)
        index.add(base)
        return index

    faiss_row("faiss Flat", flat)

    nlist = max(1, min(n // 39, int(4 * np.sqrt(n))))

    def ivf():
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = rng.choice(n, size=min(n, nlist * 64), replace=False)
        index.cp.seed = params.seed
        index.train(base[np.sort(sample)])
        index.add(base)
        return index

    def set_nprobe(index, value):
        index.nprobe = min(value, index.nlist)
        return {"nprobe": int(index.nprobe)}

    faiss_row("faiss IVF", ivf, set_nprobe, params.ivf_nprobe)

    def set_ef(index, value):
        index.hnsw.efSearch = value
        return {"efSearch": int(value)}

    for m, ef_construction in params.hnsw_configs:

        def hnsw(m=m, ef_construction=ef_construction):
            index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.add(base)
            return index

        faiss_row("faiss HNSW", hnsw, set_ef, params.hnsw_ef_search)

    pg_error = ""
    if params.pgvector:
        try:
            rows.extend(_pgvector_rows(params, base, ids, measure, progress))
        except ImportError as exc:
            pg_error = f"pgvector skipped: {exc} (install requirements-bench.txt)"
            progress(pg_error)
    return {
        "kind": "search",
        "users": n,
        "dim": d,
        "params": params.as_dict() | {"ivf_nlist": nlist},
        "vectors": {
            "source": vectors["source"],
            "seconds_to_make": round(vectors["seconds"], 1),
            "learned_taste_share": round(vectors["has_taste_share"], 3),
        },
        "rows": [asdict(row) for row in rows],
        "pgvector_error": pg_error,
        "serving_default": serving_default(rows, params.recall_k),
    }


def _describe(index) -> dict:
    if isinstance(index, faiss.IndexIVF):
        return {"nlist": int(index.nlist)}
    if isinstance(index, faiss.IndexHNSW):
        return {
            "M": int(index.hnsw.nb_neighbors(1)),
            "efConstruction": int(index.hnsw.efConstruction),
        }
    return {}


def serving_default(rows: list[SearchRow], recall_k: int) -> dict:
    """The fastest method (p50 at k=recall_k) whose recall@recall_k ≥ 0.95, among
    those serving can hold in process (FAISS and numpy)."""
    key, rkey = f"k={recall_k}", f"recall@{recall_k}"
    eligible = [
        r
        for r in rows
        if not r.method.startswith("pgvector")
        and r.recall.get(rkey, 0) >= 0.95
        and key in r.latency
    ]
    if not eligible:
        return {}
    best = min(eligible, key=lambda r: r.latency[key]["p50_ms"])
    return {
        "method": best.method,
        "params": best.params,
        "p50_ms": best.latency[key]["p50_ms"],
        rkey: best.recall[rkey],
    }


# --- pgvector ------------------------------------------------------------------------

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
COPY_TRAILER = b"\xff\xff"


def copy_binary_rows(ids: np.ndarray, vectors: np.ndarray) -> bytes:
    """A binary COPY stream of (id bigint, embedding vector(d)) rows, built with
    numpy (pgvector's binary format: int16 dim, int16 unused, float32s)."""
    n, d = vectors.shape
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("id_len", ">i4"),
            ("id", ">i8"),
            ("vec_len", ">i4"),
            ("dim", ">i2"),
            ("unused", ">i2"),
            ("vec", ">f4", (d,)),
        ]
    )
    data = np.zeros(n, dtype=row)
    data["fields"] = 2
    data["id_len"] = 8
    data["id"] = ids
    data["vec_len"] = 4 + 4 * d
    data["dim"] = d
    data["vec"] = vectors
    return COPY_HEADER + data.tobytes() + COPY_TRAILER


def _pg_start(workdir: Path, shared_buffers: str):
    """A pgserver PostgreSQL in ``workdir``, restarted once with ``shared_buffers``."""
    import pgserver

    data = workdir / "pgdata"
    server = pgserver.get_server(data, cleanup_mode="stop")
    server.psql(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}';")
    server.psql("ALTER SYSTEM SET max_parallel_maintenance_workers = 1;")
    server.cleanup()
    type(server)._instances.pop(server.pgdata, None)
    return pgserver.get_server(data, cleanup_mode="delete")


def _pgvector_rows(params, base, ids, measure, progress) -> list[SearchRow]:
    import logging

    import psycopg

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    n, d = base.shape
    workdir = Path(tempfile.mkdtemp(prefix="kindred-bench-pg-"))
    workdir.chmod(0o777)
    # The index must fit in shared buffers to be fair to pgvector (its docs'
    # advice): ~2.5x the raw vectors.
    buffers_mb = max(128, int(base.nbytes * 3 / 2**20))
    server = _pg_start(workdir, f"{buffers_mb}MB")
    rows: list[SearchRow] = []
    try:
        uri = server.get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            version = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()[0]
            conn.execute(f"CREATE TABLE items (id bigint, embedding vector({d}))")
            started = time.perf_counter()
            payload = copy_binary_rows(ids, base)
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY items (id, embedding) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    step = 8 << 20
                    for offset in range(0, len(payload), step):
                        copy.write(payload[offset : offset + step])
            del payload
            load_seconds = time.perf_counter() - started
            progress(f"pgvector {version}: {n:,} rows loaded in {load_seconds:.1f}s")
            conn.execute("SET maintenance_work_mem = '4GB'")
            conn.execute("SET max_parallel_maintenance_workers = 1")
            started = time.perf_counter()
            conn.execute(
                "CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_ip_ops) "
                f"WITH (m = {params.pg_m}, "
                f"ef_construction = {params.pg_ef_construction})"
            )
            build_seconds = time.perf_counter() - started
            conn.execute("VACUUM ANALYZE items")
            index_bytes = conn.execute(
                "SELECT pg_relation_size('items_hnsw')"
            ).fetchone()[0]
            table_bytes = conn.execute(
                "SELECT pg_total_relation_size('items') "
                "- pg_relation_size('items_hnsw')"
            ).fetchone()[0]
            progress(f"pgvector HNSW built in {build_seconds:.1f}s, {index_bytes:,} B")
            sql = "SELECT id FROM items ORDER BY embedding <#> %s::vector LIMIT %s"

            def search(q, k):
                text = "[" + ",".join(f"{x:.7g}" for x in q.tolist()) + "]"
                return np.fromiter(
                    (r[0] for r in conn.execute(sql, (text, k), prepare=True)),
                    dtype=np.int64,
                )

            probe = "[" + ",".join(["0.1"] * d) + "]"
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, (probe, 100)))
            uses_index = "items_hnsw" in plan
            ping = []
            for _ in range(200):
                started = time.perf_counter()
                conn.execute("SELECT 1", prepare=True).fetchone()
                ping.append(time.perf_counter() - started)
            ping_ms = float(np.median(ping)) * 1000
            for ef in params.pg_ef_search:
                conn.execute(f"SET hnsw.ef_search = {int(ef)}")
                row = SearchRow(
                    method="pgvector HNSW",
                    params={
                        "m": params.pg_m,
                        "ef_construction": params.pg_ef_construction,
                        "ef_search": int(ef),
                        "version": version,
                        "shared_buffers_mb": buffers_mb,
                    },
                    build_seconds=round(build_seconds, 3),
                    memory_bytes=int(index_bytes),
                    notes=(
                        f"index {index_bytes / 2**20:,.0f} MiB + table "
                        f"{table_bytes / 2**20:,.0f} MiB; COPY {load_seconds:.1f}s; "
                        "latency includes the client round trip (SELECT 1 p50 "
                        f"{ping_ms:.3f} ms); ef_search caps the rows returned"
                        + ("" if uses_index else "; PLAN DID NOT USE THE INDEX")
                    ),
                )
                # ef_search bounds how many rows the index scan returns.
                ks = tuple(k for k in params.ks if k <= ef) or (min(params.ks),)
                rows.append(measure(row, search, ks=ks))
    finally:
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows
