import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recommender.ml import synthetic
from recommender.ml.candidates import SOURCES
from recommender.ml.data import KIND_CODES, InteractionArrays, from_synthetic
from recommender.ml.evaluation import _MutualPairs, strategies_evaluate
from recommender.ml.evaluation_fit import SERVED, STRATEGIES, EvaluationConfig
from recommender.ml.evaluation_report import report_chart, report_markdown
from recommender.ml.metrics import ranking_metrics, roc_auc
from recommender.ml.ranking import predict_scores

REPO_ROOT = Path(__file__).resolve().parents[2]
LIKE, DISLIKE = KIND_CODES["like"], KIND_CODES["dislike"]
CONFIG = EvaluationConfig(max_viewers=120, embedding_kwargs={"dim": 16})


@pytest.fixture(scope="module")
def planted():
    dataset = synthetic.generate_dataset(
        n_members=1_500, seed=3, interactions_per_member=20
    )
    return from_synthetic(dataset)


@pytest.fixture(scope="module")
def evaluated(planted):
    members, interactions = planted
    return strategies_evaluate(members, interactions, config=CONFIG)


def test_every_strategy_gets_every_metric_exposure_and_a_comparison(evaluated):
    report = evaluated.report

    assert set(report["strategies"]) == set(STRATEGIES)
    for name in STRATEGIES:
        entry = report["strategies"][name]
        assert 0.0 <= entry["auc"] <= 1.0, name
        for key in ("precision@10", "recall@10", "ndcg@10", "mutual@10"):
            assert 0.0 <= entry["everyone"][key] <= 1.0, (name, key)
        for key in ("precision@10", "recall@10", "ndcg@10"):
            assert 0.0 <= entry["labelled"][key] <= 1.0, (name, key)
        assert 0.0 <= entry["exposure"]["gini"] <= 1.0
        assert 0.0 < entry["exposure"]["top1_share"] <= 1.0
        assert (
            entry["everyone"]["viewers"]
            == report["counts"]["viewers_ranked_among_everyone"]
        )
        if name != SERVED:
            for metric in ("ndcg@10", "mutual@10"):
                diff = report["comparisons"][f"{SERVED}_minus_{name}:{metric}"]
                low, high = diff["ci95"]
                assert low <= diff["mean"] <= high
    assert set(report["candidate_recall"]) == {*SOURCES, "union"}
    union = report["candidate_recall"]["union"]["recall"]
    assert all(
        entry["recall"] <= union + 1e-9 for entry in report["candidate_recall"].values()
    )
    assert set(report["tuning"]) >= {"als", "ease", "item_knn", "user_knn"}


def test_no_strategy_passes_the_ceiling_of_a_perfect_ranking(evaluated):
    report = evaluated.report
    ceiling = report["counts"]["ceiling"]

    # Likes exist for every viewer ranked; mutual likes for some on planted data.
    assert 0.0 < ceiling["precision@10"] <= 1.0
    assert 0.0 < ceiling["mutual@10"] <= ceiling["precision@10"]
    for name in STRATEGIES:
        everyone = report["strategies"][name]["everyone"]
        assert everyone["precision@10"] <= ceiling["precision@10"] + 1e-9, name
        assert everyone["mutual@10"] <= ceiling["mutual@10"] + 1e-9, name
    assert "A perfect ranking would reach precision@10" in report_markdown(
        report, title="planted"
    )


def test_the_served_pipeline_beats_random_and_popularity_on_the_planted_data(
    evaluated,
):
    strategies = evaluated.report["strategies"]
    ndcg = {name: strategies[name]["everyone"]["ndcg@10"] for name in STRATEGIES}

    assert ndcg[SERVED] > ndcg["random"] + 0.05
    assert ndcg[SERVED] > ndcg["popularity"] + 0.02
    low, _ = evaluated.report["comparisons"][f"{SERVED}_minus_popularity:ndcg@10"][
        "ci95"
    ]
    assert low > 0
    assert abs(strategies["random"]["auc"] - 0.5) < 0.06


def test_nothing_is_fitted_on_the_test_period(planted, evaluated):
    members, interactions = planted
    fitted = evaluated.fitted
    cut = fitted.split.t_holdout
    assert fitted.state.now_ts == cut
    assert fitted.split.history_for_holdout.ts.max() < cut

    # Rewrite the future: every verdict from the cut on flipped and given to
    # someone else (same times, so the cut stays where it was).
    future = interactions.ts >= cut
    kind = interactions.kind.copy()
    kind[future] = np.where(interactions.is_positive[future], DISLIKE, LIKE)
    target = interactions.target.copy()
    target[future] = np.roll(target[future], 7)
    rewritten = InteractionArrays(
        actor=interactions.actor, target=target, kind=kind, ts=interactions.ts
    )
    other = strategies_evaluate(members, rewritten, config=CONFIG).fitted

    assert other.split.t_holdout == cut
    assert other.tuning == fitted.tuning  # peers tuned before the test period
    X = np.random.default_rng(0).random((300, len(fitted.model.feature_names)))
    np.testing.assert_array_equal(
        predict_scores(fitted.model, X), predict_scores(other.model, X)
    )
    assert other.model.reciprocal_weight == fitted.model.reciprocal_weight
    rows = np.arange(fitted.state.population.n)
    for name, peer in fitted.peers.items():
        for viewer in (0, 17, 400):
            np.testing.assert_array_equal(
                peer.scores(viewer, rows), other.peers[name].scores(viewer, rows)
            )
    np.testing.assert_array_equal(
        fitted.state.population.store.likes_received,
        other.state.population.store.likes_received,
    )


def test_the_metrics_match_hand_computed_values():
    # Viewer 1 ranks three candidates: liked ones at ranks 1 and 3.
    groups = np.array([1, 1, 1, 2, 2])
    y = np.array([1, 0, 1, 0, 1])
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.2])

    metrics = ranking_metrics(groups, y, scores, k=2)

    ndcg_1 = 1.0 / (1.0 + 1.0 / np.log2(3))
    ndcg_2 = 1.0 / np.log2(3)
    assert metrics["precision@2"] == pytest.approx(0.5)
    assert metrics["recall@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["ndcg@2"] == pytest.approx((ndcg_1 + ndcg_2) / 2)
    assert roc_auc(y, scores) == pytest.approx(2 / 6)


def test_mutual_pairs_are_those_completed_in_the_test_period():
    cut = 100.0
    interactions = InteractionArrays(
        actor=np.array([1, 2, 1, 3, 1, 4]),
        target=np.array([2, 1, 3, 1, 4, 1]),
        kind=np.array([LIKE, LIKE, LIKE, LIKE, LIKE, DISLIKE], dtype=np.int8),
        # 1-2: mutual, completed after the cut; 1-3: mutual before the cut;
        # 1-4: not mutual.
        ts=np.array([50.0, 150.0, 10.0, 20.0, 160.0, 170.0]),
    )
    mutual = _MutualPairs(interactions, cut)

    assert mutual.count == 1
    assert mutual.contains(np.array([1, 2, 1, 1]), np.array([2, 1, 3, 4])).tolist() == [
        True,
        True,
        False,
        False,
    ]


def test_reports_render_as_markdown_and_png(evaluated, tmp_path):
    markdown = report_markdown(evaluated.report, title="planted", chart="chart.png")

    assert "| Kindred two-stage pipeline (served) |" in markdown
    assert "| ALS + reciprocal |" in markdown and "| union |" in markdown
    assert "served − best other" in markdown
    assert "![planted](chart.png)" in markdown
    report_chart(evaluated.report, tmp_path / "chart.png", title="planted")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_too_little_data_is_refused_with_a_value_error(planted):
    members, interactions = planted
    with pytest.raises(ValueError):
        strategies_evaluate(
            members, interactions.select(np.zeros(interactions.m, dtype=bool))
        )


def test_the_evaluation_module_imports_without_django():
    code = "import sys; sys.modules['django'] = None; import recommender.ml.evaluation"

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
