"""FAISS inner-product index over embedding vectors.

Exact (``IndexFlatIP``) for small populations, approximate above
``exact_threshold``: HNSW (``IndexHNSWFlat``, inner product) by default or IVF
(``IndexIVFFlat``). The index is wrapped in ``IndexIDMap2`` so searches return user
ids. Recall@k against exact search is measured on a sample of queries at build time
and returned with the parameters in :class:`IndexInfo`.

Threads: FAISS uses OpenMP; this module changes the thread count only when a caller
passes ``threads`` (serving runs one thread per process, see STYLE.md).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import faiss
import numpy as np

INDEX_TYPES = ("flat", "hnsw", "ivf")
MAX_EF_SEARCH = 1024


@dataclass
class IndexInfo:
    """What was built: ``index_type`` ("flat" | "hnsw" | "ivf"), its ``params``,
    ``n`` vectors of ``dim`` dims, ``build_seconds`` (wall time, excluding the recall
    measurement), ``recall_at_k`` (mean over ``sample`` queries of |ANN top k ∩ exact
    top k| / |exact top k|; 1.0 for flat) and ``recall_seconds``."""

    index_type: str
    params: dict = field(default_factory=dict)
    n: int = 0
    dim: int = 0
    build_seconds: float = 0.0
    recall_at_k: float = 1.0
    k: int = 100
    sample: int = 0
    recall_seconds: float = 0.0

    def as_dict(self) -> dict:
        """JSON-able dict (the registry's metrics / params columns)."""
        return asdict(self)


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    exact_threshold: int = 50_000,
    method: str = "hnsw",
    hnsw_m: int = 32,
    ef_construction: int = 80,
    ef_search: int = 128,
    nlist: int | None = None,
    nprobe: int | None = None,
    recall_k: int = 100,
    recall_sample: int = 200,
    seed: int = 0,
    queries: np.ndarray | None = None,
    threads: int | None = None,
    target_recall: float | None = 0.95,
) -> tuple[faiss.Index, IndexInfo]:
    """Build an inner-product index of ``vectors`` (float32 [n, d]) labelled with
    ``ids`` (int64 [n], unique).

    Below ``exact_threshold`` vectors: exact flat index. Otherwise ``method`` "hnsw"
    (``hnsw_m`` links, ``ef_construction``; ``ef_search`` is stored in the index and
    raised to ``recall_k`` if lower) or "ivf" (``nlist`` lists, default
    ~4·√n; ``nprobe``, default nlist / 16, at least 8; trained on a seeded sample).

    Recall@``recall_k`` against exact search: ``2 * recall_sample`` queries are drawn
    with ``seed`` from ``queries`` (float32 [q, d], e.g. taste vectors) when given,
    else from ``vectors``. With ``target_recall`` set, the search knob (efSearch /
    nprobe) is raised in 1.5x steps until recall on the first half of the queries
    reaches it (steps recorded in ``params["tuning"]``; the final knob is kept in the
    index); the recall reported is measured on the other half. ``threads`` sets
    FAISS's OpenMP thread count (left alone when None).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if vectors.ndim != 2 or ids.shape != (vectors.shape[0],):
        raise ValueError("vectors must be [n, d] and ids [n]")
    if method not in ("hnsw", "ivf"):
        raise ValueError("method must be 'hnsw' or 'ivf'")
    if threads is not None:
        faiss.omp_set_num_threads(int(threads))
    n, dim = vectors.shape
    rng = np.random.default_rng(seed)

    started = time.perf_counter()
    if n < exact_threshold:
        index_type, params = "flat", {}
        inner = faiss.IndexFlatIP(dim)
    elif method == "hnsw":
        index_type = "hnsw"
        ef_search = max(ef_search, recall_k)
        params = {"m": hnsw_m, "ef_construction": ef_construction}
        params["ef_search"] = ef_search
        inner = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = ef_construction
        inner.hnsw.efSearch = ef_search
    else:
        index_type = "ivf"
        nlist = nlist or max(1, min(n // 39, int(4 * np.sqrt(n))))
        nprobe = nprobe or min(nlist, max(8, nlist // 16))
        params = {"nlist": nlist, "nprobe": nprobe}
        quantizer = faiss.IndexFlatIP(dim)
        inner = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        train_rows = rng.choice(n, size=min(n, nlist * 256), replace=False)
        inner.cp.seed = seed
        inner.train(vectors[np.sort(train_rows)])
        inner.nprobe = nprobe
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(vectors, ids)
    build_seconds = time.perf_counter() - started

    info = IndexInfo(
        index_type=index_type,
        params=params,
        n=n,
        dim=dim,
        build_seconds=build_seconds,
        k=recall_k,
    )
    if index_type != "flat" and n:
        pool = vectors if queries is None else np.asarray(queries, dtype=np.float32)
        size = min(2 * recall_sample, pool.shape[0])
        drawn = rng.choice(pool.shape[0], size=size, replace=False)
        tuning, reported = pool[np.sort(drawn[::2])], pool[np.sort(drawn[1::2])]
        started = time.perf_counter()
        if target_recall is not None:
            params["tuning"] = _tune(
                index, inner, vectors, ids, tuning, recall_k, target_recall
            )
            params["target_recall"] = target_recall
            if index_type == "hnsw":
                params["ef_search"] = int(inner.hnsw.efSearch)
            else:
                params["nprobe"] = int(inner.nprobe)
        info.recall_at_k = recall_against_exact(index, vectors, ids, reported, recall_k)
        info.recall_seconds = time.perf_counter() - started
        info.sample = int(reported.shape[0])
    return index, info


def _tune(index, inner, vectors, ids, queries, k, target) -> list[list[float]]:
    """Raise HNSW's efSearch (or IVF's nprobe) by 1.5x steps until recall@k on
    ``queries`` reaches ``target``, stops improving (< 0.001 per step: the previous
    value is kept) or hits its cap; returns the [knob value, recall] steps. The
    setting is stored in the index."""
    hnsw = isinstance(inner, faiss.IndexHNSW)

    def knob(value=None):
        if value is None:
            return int(inner.hnsw.efSearch if hnsw else inner.nprobe)
        if hnsw:
            inner.hnsw.efSearch = value
        else:
            inner.nprobe = value

    cap = MAX_EF_SEARCH if hnsw else int(inner.nlist)
    steps: list[list[float]] = []
    while True:
        recall = recall_against_exact(index, vectors, ids, queries, k)
        steps.append([knob(), round(recall, 4)])
        if len(steps) > 1 and recall - steps[-2][1] < 0.001:
            knob(int(steps[-2][0]))  # a plateau: the bigger knob only costs time
            return steps
        if recall >= target or knob() >= cap:
            return steps
        knob(min(cap, int(np.ceil(knob() * 1.5))))


def recall_against_exact(
    index: faiss.Index,
    vectors: np.ndarray,
    ids: np.ndarray,
    queries: np.ndarray,
    k: int,
) -> float:
    """Mean recall@k of ``index`` against exact inner-product search over
    ``vectors`` (float32 [n, d], labelled ``ids`` int64 [n]) for ``queries``
    (float32 [q, d])."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.shape[0] == 0:
        return float("nan")
    exact = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    exact.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
    _, truth = exact.search(queries, k)
    _, found = index.search(queries, k)
    valid = truth >= 0
    # Per row: how many exact neighbours the ANN result contains (ids are unique).
    hits = np.array(
        [np.isin(t[v], f).sum() for t, f, v in zip(truth, found, valid, strict=True)]
    )  # loop over ≤ a few hundred sample queries, not over pairs
    return float(np.mean(hits / np.maximum(valid.sum(axis=1), 1)))


def search(
    index: faiss.Index, queries: np.ndarray, k: int, *, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` by inner product for ``queries`` (float32 [q, d]): (scores float32
    [q, k], ids int64 [q, k]), best first, padded with id -1 (score -inf) when the
    index holds fewer than ``k`` vectors."""
    if threads is not None:
        faiss.omp_set_num_threads(int(threads))
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if k < 1:
        raise ValueError("k must be >= 1")
    scores, ids = index.search(queries, k)
    scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
    return scores, ids.astype(np.int64)


def index_to_bytes(index: faiss.Index) -> bytes:
    """The index serialised by FAISS (its own format, not a pickle)."""
    return faiss.serialize_index(index).tobytes()


def index_from_bytes(data: bytes) -> faiss.Index:
    """The index serialised by :func:`index_to_bytes` (verify its checksum first)."""
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
