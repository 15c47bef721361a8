from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import Profile
from recommender.artifacts import index_artifact_load
from recommender.ml.features import FEATURE_VERSION
from recommender.models import TrainingRun, TrainingRunStatus, UserEmbedding
from registry.models import IndexArtifact, MLModel, ModelActivation, ModelKind
from registry.services import model_activate
from tests.accounts.factories import member

pytestmark = pytest.mark.django_db


def _call_with(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


def _call(name: str) -> str:
    return _call_with(name)


def test_train_models_registers_versions_and_prints_a_summary(seeded, media):
    output = _call("train_models")

    run = TrainingRun.objects.get()
    assert run.status == TrainingRunStatus.SUCCEEDED, run.error
    assert run.trigger == "cli"
    embedding = MLModel.objects.get(kind=ModelKind.EMBEDDING)
    ranking = MLModel.objects.get(kind=ModelKind.RANKING)
    assert not embedding.is_active and not ranking.is_active
    for key in ("auc", "log_loss", "precision@10", "recall@10", "ndcg@10"):
        assert isinstance(ranking.metrics[key], float)
    assert ranking.metrics["auc"] > 0.5
    assert "baseline_popularity" in ranking.metrics
    assert "baseline_random" in ranking.metrics
    assert ranking.metrics["training_seconds"] > 0
    assert ranking.feature_version == FEATURE_VERSION
    assert ranking.data_counts["members"] == 300
    assert ranking.training_window_start < ranking.training_window_end
    assert ranking.hyperparameters
    assert IndexArtifact.objects.get().embedding_model_id == embedding.pk
    for text in (
        "stage features",
        "stage ranking",
        "Registered embedding v1",
        "Registered ranking v1",
        "auc",
        "baseline_popularity",
        "Index flat",
        "AUTO_PROMOTE is off",
    ):
        assert text in output


def test_train_models_numbers_its_stages_and_estimates_from_the_last_run(seeded, media):
    first = _call("train_models")
    assert "stage 1/6 features…\n" in first  # no earlier run: no estimate
    assert "ETA" not in first

    second = _call("train_models")
    last = TrainingRun.objects.order_by("pk").first().summary["stages"]
    expected = sum(stage["seconds"] for stage in last.values())
    assert f"stage 1/6 features… (ETA {expected:,.0f}s by the last run)" in second
    assert "stage 5/6 evaluate… (ETA" in second
    assert "stage 6/6 serving_index… (ETA" in second


def test_train_models_if_untrained_trains_once_then_skips(seeded, media, settings):
    settings.KINDRED = {**settings.KINDRED, "AUTO_PROMOTE": True}

    _call_with("train_models", "--if-untrained")
    output = _call_with("train_models", "--if-untrained")

    assert "skipping" in output
    assert TrainingRun.objects.count() == 1
    assert MLModel.objects.filter(is_active=True).count() == 2


def test_train_models_if_untrained_trains_when_only_one_kind_is_active(seeded, media):
    _call("train_models")
    model_activate(
        model=MLModel.objects.get(kind=ModelKind.RANKING), actor=None, actor_label="t"
    )

    _call_with("train_models", "--if-untrained")

    assert TrainingRun.objects.count() == 2


def test_train_models_refuses_while_a_run_is_in_progress(seeded, media):
    TrainingRun.objects.create(
        trigger="celery",
        started_at="2030-01-01T00:00Z",
        heartbeat_at="2030-01-01T00:00Z",
    )

    with pytest.raises(CommandError, match="already running"):
        _call("train_models")
    assert not MLModel.objects.exists()


def test_auto_promotion_off_leaves_new_versions_inactive(seeded, media, settings):
    settings.KINDRED = {**settings.KINDRED, "AUTO_PROMOTE": False}

    _call("train_models")

    assert not MLModel.objects.filter(is_active=True).exists()
    assert not ModelActivation.objects.exists()


def _holdout_scores(monkeypatch, *, new: dict, active: dict) -> None:
    """The holdout figures the next training run finds: ``new`` for the version it
    trains (the stage's own metrics), ``active`` for the active version, which
    the promotion gate scores on the same rows."""
    from recommender.ml import pipeline

    stage_metrics = pipeline._holdout_metrics
    rated = ("auc", "ndcg@10")

    def new_metrics(*args, **kwargs):
        return {**stage_metrics(*args, **kwargs), **{k: new[k] for k in rated}}

    everyone = iter([{"objective": new["everyone"]}, {"objective": active["everyone"]}])
    monkeypatch.setattr(pipeline, "_holdout_metrics", new_metrics)
    monkeypatch.setattr(pipeline, "evaluate_everyone", lambda *a, **k: next(everyone))
    active_rated = {key: active[key] for key in rated}
    monkeypatch.setattr(pipeline, "evaluate_ranking", lambda *a, **k: active_rated)


def test_auto_promotion_promotes_a_version_that_beats_the_active_one(
    seeded, media, settings, monkeypatch
):
    settings.KINDRED = {**settings.KINDRED, "AUTO_PROMOTE": True}
    _call("train_models")
    # Among everyone the new model ranks better; among the rated pairs it is
    # worse: ranking among everyone decides.
    _holdout_scores(
        monkeypatch,
        new={"everyone": 0.31, "auc": 0.7, "ndcg@10": 0.5},
        active={"everyone": 0.3, "auc": 0.71, "ndcg@10": 0.6},
    )

    _call("train_models")

    assert MLModel.objects.get(kind=ModelKind.RANKING, is_active=True).version == 2
    assert MLModel.objects.get(kind=ModelKind.EMBEDDING, is_active=True).version == 2
    promotion = ModelActivation.objects.filter(kind=ModelKind.RANKING).first()
    assert promotion.actor_label == "auto-promotion"
    assert promotion.from_model.version == 1


def test_auto_promotion_promotes_when_nothing_is_active(seeded, media, settings):
    settings.KINDRED = {**settings.KINDRED, "AUTO_PROMOTE": True}

    _call("train_models")

    assert set(
        MLModel.objects.filter(is_active=True).values_list("kind", flat=True)
    ) == {
        ModelKind.EMBEDDING,
        ModelKind.RANKING,
    }
    labels = set(ModelActivation.objects.values_list("actor_label", flat=True))
    assert labels == {"auto-promotion"}


def test_auto_promotion_keeps_an_active_version_that_scores_better(
    seeded, media, settings, monkeypatch
):
    settings.KINDRED = {**settings.KINDRED, "AUTO_PROMOTE": True}
    _call("train_models")
    first_ranking = MLModel.objects.get(kind=ModelKind.RANKING, is_active=True)
    # On the new holdout the active version ranks better among everyone, while
    # the new one tells likes from dislikes better among the rated pairs: the
    # active one stays.
    _holdout_scores(
        monkeypatch,
        new={"everyone": 0.3, "auc": 0.72, "ndcg@10": 0.7},
        active={"everyone": 0.32, "auc": 0.71, "ndcg@10": 0.6},
    )

    output = _call("train_models")

    second = TrainingRun.objects.order_by("-pk").first()
    assert second.summary["ranking_gate"]["beats_active"] is False
    assert second.summary["ranking_gate"]["active"]["ndcg@10"] == 0.6
    assert second.summary["ranking_gate"]["active"]["everyone"] == 0.32
    assert second.summary["ranking_gate"]["new"]["everyone"] == 0.3
    assert second.summary["ranking_gate"]["new"]["ndcg@10"] == 0.7  # the stage's
    assert second.summary["ranking_gate"]["active_version"] == first_ranking.version
    assert MLModel.objects.get(kind=ModelKind.RANKING, is_active=True) == first_ranking
    assert MLModel.objects.get(kind=ModelKind.RANKING, version=2).is_active is False
    assert MLModel.objects.get(kind=ModelKind.EMBEDDING, version=2).is_active is False
    assert "ranking v2 not promoted" in output


def test_rebuild_index_without_an_active_embedding_model_is_a_clear_error(db):
    with pytest.raises(CommandError, match="No active embedding model"):
        _call("rebuild_index")


def test_rebuild_index_embeds_members_who_joined_since_training(seeded, media):
    _call("train_models")
    embedding = MLModel.objects.get(kind=ModelKind.EMBEDDING)
    model_activate(model=embedding, actor=None, actor_label="test")
    newcomer = member(interests=["hiking", "jazz"])

    output = _call("rebuild_index")

    index = IndexArtifact.objects.order_by("-pk").first()
    assert IndexArtifact.objects.count() == 2
    assert index.embedding_model_id == embedding.pk
    assert index.n_vectors == Profile.objects.count() == 301
    stored = UserEmbedding.objects.get(model=embedding, user=newcomer)
    vector = np.frombuffer(bytes(stored.vector), dtype="<f4")
    assert vector.shape == (2 * index.dim,) and np.isfinite(vector).all()
    faiss_index = index_artifact_load(index=index)
    assert np.array_equal(faiss_index.reconstruct(newcomer.pk), vector[index.dim :])
    assert "1 new members" in output and "flat" in output and "recall@100" in output
    assert _call("rebuild_index")  # a second rebuild finds nobody new
    assert UserEmbedding.objects.filter(model=embedding).count() == 301
