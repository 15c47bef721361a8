"""Benchmarks behind ``manage.py benchmark`` (see BENCHMARKS.md for the figures).

* :mod:`.common`: the machine, latency statistics, the results files;
* :mod:`.render`: ``BENCHMARKS.md`` from the results, and its tables;
* :mod:`.search`: candidate search — exact numpy, FAISS Flat / IVF / HNSW and
  pgvector HNSW in a PostgreSQL started by ``pgserver``;
* :mod:`.endpoint`: ``GET /api/v1/recommendations/`` through gunicorn under ``wrk``,
  against the naive baseline of :mod:`.naive`, which only the benchmark's own
  URLconf (:mod:`.urls`) mounts; load from :mod:`.wrk`, profiles from
  :mod:`.profiling`;
* :mod:`.training`: the nightly pipeline (``train_models``) in a subprocess, stage
  by stage, with its peak memory.

Nothing here is imported by the serving or training code, nor by ``config``.
"""
