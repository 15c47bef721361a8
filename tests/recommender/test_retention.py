"""Data retention through its beat task (``recommender.tasks.data_retention``):
old impressions, the vectors and files of versions that can no longer serve, and
index files replaced by newer ones; kept: what serves, the A/B challenger and the
rollback targets."""

import datetime as dt

import pytest
from django.conf import settings as django_settings
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from config.celery import app
from recommender.models import RecommendationLog, RetentionRun, UserEmbedding
from recommender.tasks import data_retention
from registry.artifacts import artifact_save
from registry.models import IndexArtifact, MLModel, ModelActivation, ModelKind
from registry.services import model_activate, model_set_traffic
from tests.accounts.factories import member
from tests.recommender.factories import RecommendationLogFactory, UserEmbeddingFactory
from tests.registry.factories import MLModelFactory

pytestmark = pytest.mark.django_db

EMBEDDING, RANKING = ModelKind.EMBEDDING, ModelKind.RANKING


def days_ago(days: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(days=days)


@pytest.fixture
def policy(settings, media):
    """Retention settings for the test (media: artifacts in a fresh folder)."""

    def apply(
        impressions: int = 180, embeddings: int = 14, artifacts: int = 30, keep: int = 1
    ) -> None:
        settings.KINDRED = {
            **settings.KINDRED,
            "IMPRESSIONS_RETENTION_DAYS": impressions,
            "EMBEDDINGS_RETENTION_DAYS": embeddings,
            "ARTIFACTS_RETENTION_DAYS": artifacts,
            "ROLLBACK_VERSIONS_KEPT": keep,
        }

    apply()
    return apply


def run_task() -> RetentionRun:
    return RetentionRun.objects.get(pk=data_retention())


# --- the task -------------------------------------------------------------------------


def test_celery_beat_runs_the_retention_task_every_day():
    entry = django_settings.CELERY_BEAT_SCHEDULE["data-retention"]

    assert entry["task"] == "recommender.tasks.data_retention"
    assert entry["task"] in app.tasks
    assert entry["schedule"].hour == {5} and entry["schedule"].minute == {0}


# --- impressions ----------------------------------------------------------------------


def test_impressions_older_than_the_period_are_deleted(policy):
    policy(impressions=180)
    old = RecommendationLogFactory.create_batch(3, created_at=days_ago(181))
    recent = RecommendationLogFactory.create_batch(2, created_at=days_ago(179))

    run = run_task()

    assert set(RecommendationLog.objects.values_list("pk", flat=True)) == {
        impression.pk for impression in recent
    }
    assert run.impressions_deleted == len(old) == 3
    assert run.settings["impressions_days"] == 180
    assert run.finished_at is not None


def test_impressions_are_deleted_in_batches(policy, monkeypatch):
    import recommender.retention

    monkeypatch.setattr(recommender.retention, "BATCH_ROWS", 2)
    RecommendationLogFactory.create_batch(5, created_at=days_ago(400))
    table = RecommendationLog._meta.db_table

    with CaptureQueriesContext(connection) as queries:
        run = run_task()

    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1 rows
    assert all(table in sql for sql in deletes)
    assert run.impressions_deleted == 5
    assert not RecommendationLog.objects.exists()


def test_a_period_of_zero_keeps_for_ever(policy):
    policy(impressions=0, embeddings=0, artifacts=0)
    RecommendationLogFactory(created_at=days_ago(3650))
    old = History().version(EMBEDDING, 1, age=3650)

    run = run_task()

    assert RecommendationLog.objects.count() == 1
    assert UserEmbedding.objects.filter(model=old).count() == 2
    assert default_storage.exists(old.artifact.name)
    assert (run.impressions_deleted, run.embeddings_deleted, run.files_deleted) == (
        0,
        0,
        0,
    )
    assert run.settings["impressions_before"] is None


# --- versions -------------------------------------------------------------------------


class History:
    """Registry versions with files, vectors (two members each) and a history of
    activations, dated in the past."""

    def __init__(self):
        self.members = [member(), member()]

    def version(self, kind: str, number: int, *, age: float) -> MLModel:
        stored = artifact_save(content=b"m" * 100, folder=f"models/{kind}")
        model = MLModelFactory(
            kind=kind,
            version=number,
            artifact=stored.name,
            artifact_sha256=stored.sha256,
            artifact_size=stored.size,
        )
        if kind == EMBEDDING:
            self.index(model, age=age)
            for user in self.members:
                UserEmbeddingFactory(user=user, model=model)
        MLModel.objects.filter(pk=model.pk).update(created_at=days_ago(age))
        return model

    def index(self, model: MLModel, *, age: float) -> IndexArtifact:
        stored = artifact_save(content=b"i" * 50, folder="indexes", suffix=".faiss")
        index = IndexArtifact.objects.create(
            embedding_model=model,
            artifact=stored.name,
            artifact_sha256=stored.sha256,
            artifact_size=stored.size,
            index_type="flat",
        )
        IndexArtifact.objects.filter(pk=index.pk).update(created_at=days_ago(age))
        return index

    def promote(self, model: MLModel, *, age: float) -> None:
        model_activate(model=model, actor=None, actor_label="test")
        self._backdate(model, age)

    def challenge(self, model: MLModel, *, age: float) -> None:
        model_set_traffic(model=model, traffic_percent=10, actor=None)
        self._backdate(model, age)

    @staticmethod
    def _backdate(model: MLModel, age: float) -> None:
        when = days_ago(age)
        latest = ModelActivation.objects.order_by("-id").first()
        ModelActivation.objects.filter(pk=latest.pk).update(created_at=when)
        if latest.to_model_id == model.pk and latest.action == "promote":
            MLModel.objects.filter(pk=model.pk).update(activated_at=when)


@pytest.fixture
def registry():
    """Embedding versions, all registered 100 days ago: v1 served from day 100 to
    90, v3 from 90 to 80, v4 from 80 to 70, v5 since (active, promoted from v4);
    v2 never served, v6 is the A/B challenger (since day 60), v7 was registered
    yesterday. Ranking: r1 never served, r2 served from day 100 to 90, r3 since."""
    history = History()
    v = {n: history.version(EMBEDDING, n, age=100) for n in (1, 2, 3, 4, 5, 6)}
    v[7] = history.version(EMBEDDING, 7, age=1)
    for number, age in ((1, 100), (3, 90), (4, 80), (5, 70)):
        history.promote(v[number], age=age)
    history.challenge(v[6], age=60)
    r = {n: history.version(RANKING, n, age=100) for n in (1, 2, 3)}
    history.promote(r[2], age=100)
    history.promote(r[3], age=90)
    return {
        **{f"v{n}": model for n, model in v.items()},
        **{f"r{n}": model for n, model in r.items()},
    }


def files_of(model: MLModel) -> list[str]:
    return [model.artifact.name, *(i.artifact.name for i in model.indexes.all())]


def pruned(run: RetentionRun, removed: str) -> set[str]:
    return {
        f"{entry['kind'][0]}{entry['version']}"
        for entry in run.versions_pruned
        if entry["removed"] == removed
    }


@pytest.mark.parametrize(
    ("keep", "gone"),
    [(1, {"e1", "e2", "e3"}), (2, {"e1", "e2"}), (0, {"e1", "e2", "e3"})],
)
def test_versions_that_can_no_longer_serve_lose_vectors_and_files(
    policy, registry, keep, gone
):
    # keep=0: v4 stays anyway, as the version `rollback` would re-activate.
    policy(embeddings=14, artifacts=30, keep=keep)
    files = {name: files_of(model) for name, model in registry.items()}

    run = run_task()

    gone_versions = {f"v{name[1:]}" for name in gone} | {"r1"}
    for name, model in registry.items():
        model.refresh_from_db()
        vectors = UserEmbedding.objects.filter(model=model).count()
        if name in gone_versions:
            assert model.pruned_at is not None, name
            assert model.artifact.name == "" and not model.indexes.exists(), name
            assert not any(default_storage.exists(f) for f in files[name]), name
            assert vectors == 0, name
        else:
            assert model.pruned_at is None, name
            assert all(default_storage.exists(f) for f in files[name]), name
            assert vectors == (2 if model.kind == EMBEDDING else 0), name
    assert pruned(run, "vectors") == gone
    assert pruned(run, "artifacts") == gone | {"r1"}
    assert run.embeddings_deleted == 2 * len(gone)
    assert run.files_deleted == 2 * len(gone) + 1  # model + index each, r1's model
    assert run.bytes_freed == 150 * len(gone) + 100
    assert run.errors == []


def test_vectors_go_before_files_and_the_version_can_no_longer_be_promoted(
    policy, registry
):
    policy(embeddings=14, artifacts=365)

    run = run_task()

    v2 = MLModel.objects.get(pk=registry["v2"].pk)
    assert pruned(run, "vectors") == {"e1", "e2", "e3"}
    assert pruned(run, "artifacts") == set()
    assert default_storage.exists(v2.artifact.name)
    assert v2.pruned_at is not None
    with pytest.raises(CommandError, match="can no longer serve"):
        call_command("promote", "embedding", "2")
    with pytest.raises(Exception, match="can no longer serve"):
        model_set_traffic(model=v2, traffic_percent=5, actor=None)
    assert MLModel.objects.get(kind=EMBEDDING, is_active=True).version == 5


def test_the_version_rollback_would_reactivate_is_kept_though_it_never_served(
    policy,
):
    policy(keep=0)
    history = History()
    r1 = history.version(RANKING, 1, age=100)
    # The first promotion has no "from": rollback falls back to the highest
    # version below the active one.
    history.promote(history.version(RANKING, 2, age=100), age=100)

    run_task()

    assert MLModel.objects.get(pk=r1.pk).pruned_at is None
    assert default_storage.exists(r1.artifact.name)
    call_command("rollback", "ranking")
    assert MLModel.objects.get(kind=RANKING, is_active=True) == r1


def test_a_second_run_finds_nothing_more_to_remove(policy, registry):
    run_task()

    again = run_task()

    assert again.versions_pruned == []
    assert (again.embeddings_deleted, again.files_deleted) == (0, 0)


def test_index_files_replaced_long_enough_ago_are_deleted(policy):
    history = History()
    active = history.version(EMBEDDING, 1, age=100)  # its first index: day 100
    history.promote(active, age=100)
    middle = history.index(active, age=50)
    replacing = history.index(active, age=40)
    newest = history.index(active, age=1)
    first = IndexArtifact.objects.filter(embedding_model=active).earliest("created_at")
    names = {i.pk: i.artifact.name for i in (first, middle, replacing, newest)}

    run = run_task()

    # Replaced 50 and 40 days ago: gone; replaced yesterday, and the newest: kept.
    assert set(active.indexes.values_list("pk", flat=True)) == {
        replacing.pk,
        newest.pk,
    }
    assert not default_storage.exists(names[first.pk])
    assert not default_storage.exists(names[middle.pk])
    assert default_storage.exists(names[replacing.pk])
    assert run.indexes_deleted == 2
    assert MLModel.objects.get(pk=active.pk).pruned_at is None


def test_a_file_the_storage_refuses_to_delete_is_reported_and_the_rest_go(
    policy, registry, monkeypatch
):
    stuck = registry["v1"].artifact.name
    delete = default_storage.delete

    def refusing(name):
        if name == stuck:
            raise PermissionError(13, "Permission denied")
        return delete(name)

    monkeypatch.setattr(default_storage, "delete", refusing)

    run = run_task()

    assert [error["file"] for error in run.errors] == [stuck]
    assert "Permission denied" in run.errors[0]["error"]
    assert default_storage.exists(stuck)
    assert not default_storage.exists(registry["v2"].artifact.name)


def test_the_runs_are_listed_read_only_in_the_admin(policy, registry, client):
    from tests.accounts.factories import UserFactory

    run = run_task()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    listing = client.get("/admin/recommender/retentionrun/")
    page = client.get(f"/admin/recommender/retentionrun/{run.pk}/change/")
    model_page = client.get(f"/admin/registry/mlmodel/{registry['v1'].pk}/change/")

    assert listing.status_code == page.status_code == model_page.status_code == 200
    assert b"models/embedding/" in page.content  # the files it removed
    assert b"Pruned at" in model_page.content
    assert (
        client.post(f"/admin/recommender/retentionrun/{run.pk}/delete/").status_code
        == 403
    )
