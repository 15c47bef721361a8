"""A small run of ``manage.py benchmark`` so the command cannot rot (no timing
assertions: speed is what the command measures, not what tests check)."""

import json

import numpy as np
import pytest
from django.core import signals
from django.core.management import CommandError, call_command
from django.db import close_old_connections
from django.urls import NoReverseMatch, reverse

from recommender.benchmarks.common import latency_stats, results_save
from recommender.benchmarks.endpoint import BENCHMARK_URLCONF, NAIVE_PATH
from recommender.benchmarks.render import NOTES_END, NOTES_START
from recommender.benchmarks.search import COPY_HEADER, COPY_TRAILER, copy_binary_rows
from tests.accounts.factories import member
from tests.recommender import fakes

# The serving engine's stand-in (the hits smoke test).
engine, eager_tasks = fakes.engine, fakes.eager_tasks


def test_search_smoke_writes_json_and_markdown_and_keeps_notes(tmp_path):
    args = ["--search", "--users", "2000", "--repeat", "1", "--queries", "20"]
    args += ["--no-pgvector", "--cache-dir", "", "--out", str(tmp_path)]
    call_command("benchmark", *args)

    results = json.loads((tmp_path / "BENCHMARKS.json").read_text())
    section = results["search-2000"]
    assert section["users"] == 2000 and section["dim"] == 64
    assert section["machine"]["cores"] >= 1 and section["machine"]["cpu"] is not None
    methods = {row["method"] for row in section["rows"]}
    assert methods == {"numpy exact", "faiss Flat", "faiss IVF", "faiss HNSW"}
    for row in section["rows"]:
        assert set(row["latency"]) == {"k=100", "k=500"}
        assert row["latency"]["k=100"]["n"] == 20
        if row["method"] in ("numpy exact", "faiss Flat"):
            assert row["recall"]["recall@100"] == 1.0
    assert section["serving_default"]["recall@100"] >= 0.95

    md = tmp_path / "BENCHMARKS.md"
    text = md.read_text()
    assert "## Candidate search: 2,000 members x 64 dims" in text
    assert "| faiss HNSW |" in text
    # Hand-written notes survive a re-render; sections merge by name.
    md.write_text(text.replace(NOTES_START + "\n", NOTES_START + "\nOur notes.\n"))
    other = dict(section, users=1000)
    results_save(out_dir=tmp_path, sections={"search-1000": other})
    text = md.read_text()
    assert "Our notes." in text.split(NOTES_END)[0]
    assert "2,000 members" in text and "1,000 members" in text


def test_benchmark_needs_a_choice_and_sane_scales(tmp_path):
    with pytest.raises(CommandError, match="at least one"):
        call_command("benchmark", "--out", str(tmp_path))
    with pytest.raises(CommandError):
        call_command("benchmark", "--search", "--users", "0", "--out", str(tmp_path))


def test_copy_binary_rows_is_postgres_binary_copy():
    ids = np.array([7, 9], dtype=np.int64)
    vectors = np.array([[1.0, -2.0], [0.5, 0.25]], dtype=np.float32)
    data = copy_binary_rows(ids, vectors)
    assert data.startswith(COPY_HEADER) and data.endswith(COPY_TRAILER)
    row = data[len(COPY_HEADER) : len(COPY_HEADER) + 2 + 4 + 8 + 4 + 4 + 8]
    assert row[:2] == (2).to_bytes(2, "big")  # two fields
    assert int.from_bytes(row[6:14], "big") == 7
    assert np.frombuffer(row[22:30], dtype=">f4").tolist() == [1.0, -2.0]


def test_latency_stats_in_milliseconds():
    stats = latency_stats([0.001] * 99 + [0.1])
    assert stats["n"] == 100 and stats["p50_ms"] == 1.0 and stats["max_ms"] == 100.0


def test_naive_baseline_is_not_mounted_by_default():
    with pytest.raises(NoReverseMatch):
        reverse("bench-naive-recommendations")


def test_the_benchmark_urlconf_adds_the_naive_baseline_to_the_project_urls():
    urlconf = BENCHMARK_URLCONF

    assert reverse("bench-naive-recommendations", urlconf=urlconf) == NAIVE_PATH
    assert reverse("recommendation-list", urlconf=urlconf) == reverse(
        "recommendation-list"
    )


@pytest.mark.django_db
def test_hits_in_process_smoke(tmp_path, monkeypatch, engine):
    # config.wsgi marks the process as a web process; not for later tests.
    monkeypatch.setenv("KINDRED_WEB_PROCESS", "")
    for _ in range(4):
        member()
    args = ["--hits", "--members", "3", "--rounds", "2", "--out", str(tmp_path)]
    # As Django's test client does: the test's transaction keeps its connection.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        call_command("benchmark", *args)
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)

    section = json.loads((tmp_path / "BENCHMARKS.json").read_text())["hits-100000"]
    assert section["answers"] == {"200 hit": 6}
    assert section["cpu"]["n"] == 6 and section["wall"]["p50_ms"] > 0
    assert "Cache hits in-process" in (tmp_path / "BENCHMARKS.md").read_text()
