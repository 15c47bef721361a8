import io
import json

import pytest
from django.core.management import CommandError, call_command
from threadpoolctl import threadpool_limits

from accounts.demo import demo_seed
from recommender.ml.evaluation_fit import BASELINES, SERVED, STRATEGIES
from recommender.models import TrainingRun

pytestmark = pytest.mark.django_db


def _call(*args) -> str:
    out = io.StringIO()
    with threadpool_limits(limits=1):
        call_command(*args, stdout=out)
    return out.getvalue()


def test_evaluate_prints_the_table_and_writes_json_markdown_and_png(tmp_path):
    demo_seed(users=400, seed=5)

    output = _call(
        "evaluate", "--namespace", "demo", "--out", str(tmp_path), "--dim", "16"
    )

    assert "ranked among everyone the strategy may recommend" in output
    assert "ranked among the pairs rated in the test period" in output
    assert "candidate recall of the served sources" in output
    for label in (
        "random",
        "popularity",
        "liked you, then popularity",
        "content-only",
        "collaborative-only",
        "ALS + reciprocal",
        "EASE",
        "item-kNN",
        "user-kNN",
        "Kindred two-stage pipeline (served)",
    ):
        assert label in output
    assert "ndcg@10: served − best other" in output
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["strategies"]) == set(STRATEGIES)
    assert report["namespace"] == "demo"
    assert report["split"]["t_label"] < report["split"]["t_holdout"]
    markdown = (tmp_path / "report.md").read_text()
    assert "| Kindred two-stage pipeline (served) |" in markdown
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_without_enough_data_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="Cannot evaluate"):
        _call("evaluate", "--out", str(tmp_path))


def test_the_nightly_evaluate_stage_stores_the_same_comparison(seeded, media):
    from recommender.services.pipeline import pipeline_run

    with threadpool_limits(limits=1):
        run = pipeline_run(trigger="test")

    run = TrainingRun.objects.get(pk=run.pk)
    evaluation = run.summary["evaluation"]
    # Bounded: the baselines and the served pipeline, no peer tuning.
    assert set(evaluation["strategies"]) == {*BASELINES, SERVED}
    assert evaluation["split"]["t_holdout"] == run.ranking_model.metrics["t_holdout"]
    assert 0 < evaluation["counts"]["viewers_ranked_among_everyone"] <= 200
    assert run.status == "succeeded"
