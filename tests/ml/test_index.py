import numpy as np
import pytest

from recommender.ml.index import (
    build_index,
    index_from_bytes,
    index_to_bytes,
    search,
)


def _exact_top(vectors, ids, queries, k):
    scores = queries @ vectors.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids[top]


def test_small_populations_get_an_exact_index_returning_user_ids():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    ids = np.arange(300, dtype=np.int64) * 10 + 7
    queries = rng.standard_normal((5, 8)).astype(np.float32)

    index, info = build_index(vectors, ids)
    scores, found = search(index, queries, 10)

    assert info.index_type == "flat" and info.recall_at_k == 1.0
    assert np.array_equal(found, _exact_top(vectors, ids, queries, 10))
    assert np.allclose(scores, np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :10])
    assert scores.dtype == np.float32 and found.dtype == np.int64


def test_results_are_padded_when_k_exceeds_the_population():
    vectors = np.eye(3, 4, dtype=np.float32)

    index, _ = build_index(vectors, np.array([5, 6, 7]))
    scores, found = search(index, vectors[:1], 5)

    assert found.tolist() == [[5, 6, 7, -1, -1]] or found[0, 3:].tolist() == [-1, -1]
    assert np.all(np.isneginf(scores[0, 3:]))


@pytest.fixture(scope="module")
def hnsw():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((20_000, 32)).astype(np.float32)
    ids = rng.permutation(10**6)[:20_000].astype(np.int64)
    index, info = build_index(vectors, ids, exact_threshold=1_000, method="hnsw")
    return rng, vectors, ids, index, info


def test_hnsw_recall_against_exact_search(hnsw):
    rng, vectors, ids, index, info = hnsw
    queries = rng.standard_normal((100, 32)).astype(np.float32)

    _, found = search(index, queries, 100)
    truth = _exact_top(vectors, ids, queries, 100)
    recall = np.mean([np.isin(t, f).mean() for t, f in zip(truth, found, strict=True)])

    assert info.index_type == "hnsw" and info.n == 20_000 and info.dim == 32
    assert info.params["ef_search"] >= 100 and info.params["m"] == 32
    assert recall >= 0.95
    assert info.recall_at_k >= 0.95 and info.k == 100 and info.sample == 200
    assert info.build_seconds > 0


def test_index_round_trips_through_bytes(hnsw):
    rng, _, _, index, _ = hnsw
    queries = rng.standard_normal((10, 32)).astype(np.float32)

    restored = index_from_bytes(index_to_bytes(index))

    assert restored.ntotal == index.ntotal
    assert np.array_equal(
        search(restored, queries, 20)[1], search(index, queries, 20)[1]
    )


def test_ivf_reaches_the_target_recall_by_probing_more_lists():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((40, 16))
    vectors = (
        centres[rng.integers(0, 40, 8_000)] + 0.3 * rng.standard_normal((8_000, 16))
    ).astype(np.float32)

    index, info = build_index(
        vectors, np.arange(8_000), exact_threshold=1_000, method="ivf", recall_k=20
    )

    assert info.index_type == "ivf"
    assert info.params["nprobe"] >= 8 and info.params["nlist"] > 1
    assert info.recall_at_k >= 0.9


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        build_index(np.zeros((3, 2), np.float32), np.arange(4))
    with pytest.raises(ValueError):
        build_index(np.zeros((3, 2), np.float32), np.arange(3), method="lsh")
