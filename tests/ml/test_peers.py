import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recommender.ml.metrics import exposure_concentration, ndcg_at_k, roc_auc
from recommender.ml.peers import (
    DEFAULT_GRIDS,
    PEERS,
    ALSPeer,
    EASEPeer,
    ItemKNNPeer,
    LikedYouThenPopularityPeer,
    LikeGraph,
    Peer,
    PopularityPeer,
    ReciprocalPeer,
    UserKNNPeer,
    ValidationCase,
    make_peer,
    tune,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Settings for 80 members in a few taste groups: ALS gets one factor per group (more
# start fitting the noise of so few likes).
MODEL_PEERS = {
    "als": lambda groups: ALSPeer(factors=groups, iterations=15, regularization=0.1),
    "ease": lambda groups: EASEPeer(l2=50.0),
    "item_knn": lambda groups: ItemKNNPeer(neighbours=20),
    "user_knn": lambda groups: UserKNNPeer(neighbours=20),
}


def _graph(actor, target, n) -> LikeGraph:
    return LikeGraph(n, np.asarray(actor, np.int64), np.asarray(target, np.int64))


@pytest.fixture(scope="module")
def blocks():
    """Two taste blocks of 40 members: each likes 30 % of their own block, nobody
    outside it; two likes per member are held out."""
    rng = np.random.default_rng(0)
    n = 80
    block = np.arange(n) // 40
    likes = (block[:, None] == block[None, :]) & (rng.random((n, n)) < 0.3)
    np.fill_diagonal(likes, False)
    actor, target = np.nonzero(likes)
    held = np.zeros(actor.shape[0], dtype=bool)
    for v in range(n):
        mine = np.flatnonzero(actor == v)
        held[rng.choice(mine, size=2, replace=False)] = True
    graph = _graph(actor[~held], target[~held], n)
    cases = []
    for v in range(n):
        seen = np.r_[v, target[~held & (actor == v)]]
        cands = np.setdiff1d(np.arange(n), seen)
        relevant = np.isin(cands, target[held & (actor == v)])
        cases.append(ValidationCase(viewer=v, candidates=cands, relevant=relevant))
    return graph, block, cases


def test_the_like_graph_counts_distinct_likes():
    graph = _graph([0, 0, 0, 1, 2], [1, 1, 2, 2, 0], 4)

    assert graph.csr.shape == (4, 4) and graph.csr.dtype == np.float32
    assert graph.csr.toarray().tolist() == [
        [0, 1, 1, 0],
        [0, 0, 1, 0],
        [1, 0, 0, 0],
        [0, 0, 0, 0],
    ]
    assert graph.popularity.tolist() == [1.0, 1.0, 2.0, 0.0]
    assert graph.popularity.dtype == np.float64
    assert graph.likes_given.tolist() == [2.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        _graph([0], [4], 4)


@pytest.mark.parametrize("name", sorted(MODEL_PEERS))
def test_each_model_peer_ranks_held_out_in_block_likes_far_above_chance(blocks, name):
    graph, block, cases = blocks
    peer = MODEL_PEERS[name](2).fit(graph)

    scores = [peer.scores(c.viewer, c.candidates) for c in cases]

    in_block_auc = [
        roc_auc(block[c.candidates] == block[c.viewer], s)
        for c, s in zip(cases, scores, strict=True)
    ]
    groups = np.repeat(np.arange(len(cases)), [len(c.candidates) for c in cases])
    y, scores = np.concatenate([c.relevant for c in cases]), np.concatenate(scores)
    chance = ndcg_at_k(groups, y, np.zeros_like(scores), 10)
    # A perfect block detector is ~2.4 x chance: 2 held-out likes among ~29 unseen
    # in-block members and ~40 out-of-block ones.
    assert ndcg_at_k(groups, y, scores, 10) > 1.5 * chance
    assert np.mean(in_block_auc) > 0.95
    assert scores.dtype == np.float64 and np.all(np.isfinite(scores))


def test_popularity_ranks_by_likes_received():
    graph = _graph([0, 1, 2, 3, 0, 1], [5, 5, 5, 5, 4, 4], 6)
    peer = PopularityPeer().fit(graph)

    scores = peer.scores(3, np.array([4, 5, 1]))

    assert scores.tolist() == [2.0, 4.0, 0.0]


def test_liked_you_ranks_the_liker_first_then_by_popularity():
    # 1 and 2 liked viewer 0; 3 is by far the most popular; 2 is more popular than 1.
    actor = [1, 2, 4, 5, 6, 4, 5, 6, 1]
    target = [0, 0, 3, 3, 3, 2, 2, 2, 5]
    peer = LikedYouThenPopularityPeer().fit(_graph(actor, target, 7))
    cands = np.array([3, 1, 4, 2, 5])

    scores = peer.scores(0, cands)

    assert cands[np.argsort(-scores, kind="stable")].tolist() == [2, 1, 3, 5, 4]


@pytest.mark.parametrize("name", sorted(MODEL_PEERS))
def test_a_viewer_without_likes_gets_popularity(blocks, name):
    graph, _, _ = blocks
    n = graph.n + 2  # row 80 never liked anyone; row 81 is isolated
    extra_actor = np.r_[graph.actor, [0, 1, 2]]
    extra_target = np.r_[graph.target, [80, 80, 80]]
    graph = _graph(extra_actor, extra_target, n)
    peer = MODEL_PEERS[name](2).fit(graph)
    cands = np.arange(n - 1)

    scores = peer.scores(80, cands)

    assert np.array_equal(scores, graph.popularity[cands])
    for viewer in (0, 81):
        assert np.all(np.isfinite(peer.scores(viewer, np.array([80, 81, 5]))))


def _one_way_and_mutual():
    """Group A (0-19) likes everyone in X (20-39) and Y (40-59) at random; X likes A
    back, Y likes B (60-79) and B likes Y. Seen from A, X and Y are equally liked;
    only X would like back."""
    rng = np.random.default_rng(1)
    groups = {"A": range(0, 20), "X": range(20, 40), "Y": range(40, 60)}
    groups["B"] = range(60, 80)
    edges = [("A", "X"), ("A", "Y"), ("X", "A"), ("Y", "B"), ("B", "Y")]
    actor, target = [], []
    for source, sink in edges:
        for a in groups[source]:
            chosen = [t for t in groups[sink] if rng.random() < 0.5]
            actor += [a] * len(chosen)
            target += chosen
    return _graph(actor, target, 80)


@pytest.mark.parametrize("name", sorted(MODEL_PEERS))
def test_reciprocal_fusion_prefers_candidates_who_would_like_back(name):
    graph = _one_way_and_mutual()
    base = MODEL_PEERS[name](4).fit(graph)
    reciprocal = ReciprocalPeer(base)
    cands = np.arange(20, 60)
    mutual = cands < 40

    one_way = np.mean([roc_auc(mutual, base.scores(v, cands)) for v in range(20)])
    fused = np.mean([roc_auc(mutual, reciprocal.scores(v, cands)) for v in range(20)])

    assert reciprocal.name == f"{name}_reciprocal"
    assert one_way < 0.75  # one direction alone does not tell X from Y
    assert fused > 0.95


def test_reciprocal_scores_lie_in_unit_interval_with_cold_members():
    graph = _graph([0, 1, 2, 3, 1], [1, 0, 3, 2, 3], 6)  # rows 4, 5: no likes
    reciprocal = make_peer("item_knn_reciprocal", {"neighbours": 5}).fit(graph)

    for viewer in range(6):
        scores = reciprocal.scores(viewer, np.arange(6))
        assert np.all((scores >= 0) & (scores <= 1)), viewer


def test_reciprocal_refits_its_base_when_given_another_graph():
    first = _graph([0, 1], [1, 0], 3)
    second = _graph([0, 1, 2], [1, 0, 1], 3)
    base = PopularityPeer().fit(first)

    reciprocal = ReciprocalPeer(base).fit(second)

    assert base.graph is second and reciprocal.graph is second


class _SignedPopularity(Peer):
    name = "signed_popularity"
    popularity_fallback = False

    def __init__(self, *, sign: float) -> None:
        super().__init__(sign=sign)

    def _fit(self, graph):
        pass

    def _scores(self, viewer, cands):
        return self.params["sign"] * self.graph.popularity[cands]


def test_tune_keeps_the_better_setting_and_reports_every_setting():
    # Members 5-9 are popular; each viewer's held-out like is one of them.
    actor = np.repeat(np.arange(10, 30), 5)
    target = np.tile(np.arange(5, 10), 20)
    graph = _graph(actor, target, 30)
    cases = [
        ValidationCase(v, np.arange(10), np.arange(10) == 5 + v % 5)
        for v in range(10, 20)
    ]
    grid = [{"sign": -1.0}, {"sign": 1.0}]

    peer, report = tune(lambda p: _SignedPopularity(**p), grid, graph, cases, k=3)

    assert report["chosen"] == {"sign": 1.0} and peer.params == {"sign": 1.0}
    assert peer.graph is graph
    assert set(report["ndcg"]) == {str(p) for p in grid}
    assert report["ndcg"]["{'sign': 1.0}"] > report["ndcg"]["{'sign': -1.0}"]
    assert report["ndcg"]["{'sign': -1.0}"] == 0.0


def test_default_grids_name_real_peers_with_valid_settings(blocks):
    graph, _, cases = blocks

    assert set(DEFAULT_GRIDS) == set(PEERS)
    for name, grid in DEFAULT_GRIDS.items():
        assert 1 <= len(grid) <= 4
        peer, report = tune(
            lambda p, name=name: (
                make_peer(name, {**p, "max_items": 50})
                if name == "ease"
                else make_peer(name, p)
            ),
            grid,
            graph,
            cases,
        )
        assert peer.name == name
        assert all(0.0 <= value <= 1.0 for value in report["ndcg"].values())


def test_ease_scores_members_outside_its_items_lowest():
    # Only members 0 and 1 are among the two most-liked; 2 and 3 are left out.
    graph = _graph([2, 3, 4, 2, 3, 4, 5, 5], [0, 0, 0, 1, 1, 1, 2, 3], 6)
    peer = EASEPeer(l2=1.0, max_items=2).fit(graph)

    scores = peer.scores(5, np.array([0, 1, 2, 3]))

    assert peer.items.tolist() == [0, 1]
    assert np.all(scores[2:] < scores[:2].min())


def test_gini_is_zero_for_equal_exposure_and_near_one_for_a_single_member():
    equal = exposure_concentration(np.repeat(np.arange(200), 3), 200)
    single = exposure_concentration(np.full(500, 7), 200)

    assert equal["gini"] == pytest.approx(0.0, abs=1e-12)
    assert equal["top1_share"] == pytest.approx(2 / 200)
    assert single["gini"] == pytest.approx(1 - 1 / 200)
    assert single["top1_share"] == 1.0


def test_gini_and_top1_share_by_hand():
    # Counts 0, 0, 1, 3: mean absolute difference 20 / 16, mean 1.
    assert exposure_concentration(np.array([2, 3, 3, 3]), 4)["gini"] == 0.625
    # 300 members; the top 1 % are 3 members holding 30 + 20 + 10 of 120 impressions.
    shown = np.r_[np.full(30, 0), np.full(20, 1), np.full(10, 2), np.arange(3, 63)]

    result = exposure_concentration(shown, 300)

    assert result["top1_share"] == pytest.approx(60 / 120)


def test_peers_import_without_django():
    code = "import sys; sys.modules['django'] = None; import recommender.ml.peers"

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
