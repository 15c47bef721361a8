"""A disk that fills up while the pipeline writes its artifacts (issue 13 #14): no
``.tmp-*`` file left behind, nothing half-registered, and an error that says what
happened."""

import os
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from recommender.models import TrainingRun, TrainingRunStatus, UserEmbedding
from registry.models import IndexArtifact, MLModel, ModelKind
from registry.services import model_activate
from tests.registry.disk_full import fill_disk

pytestmark = pytest.mark.django_db


def _files(root) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(folder, name), root)
        for folder, _, names in os.walk(root)
        for name in names
    )


def _train(stdout=None) -> str:
    out = stdout or StringIO()
    call_command("train_models", stdout=out)
    return out.getvalue()


def test_a_full_disk_while_train_models_writes_the_index(
    seeded, media, monkeypatch, django_capture_on_commit_callbacks
):
    disk = fill_disk(monkeypatch, where="/indexes/")
    out = StringIO()

    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(CommandError, match="No space left on device") as raised,
    ):
        _train(out)

    assert disk.failed  # the index file really was being written
    assert "partial file was deleted" in str(raised.value)
    run = TrainingRun.objects.get()
    assert run.status == TrainingRunStatus.FAILED
    assert "No space left on device" in run.error
    assert "Discarded embedding v1" in run.error
    assert "Discarded embedding v1" in out.getvalue()
    # Nothing that cannot serve stays registered (no embedding version without an
    # index, none of its vectors) and no file is left under media.
    assert not MLModel.objects.filter(kind=ModelKind.EMBEDDING).exists()
    assert not UserEmbedding.objects.exists()
    assert not IndexArtifact.objects.exists()
    assert _files(media) == []


def test_after_the_disk_is_freed_the_next_run_succeeds(seeded, media, monkeypatch):
    with monkeypatch.context() as patch:
        fill_disk(patch, where="/models/embedding/")
        with pytest.raises(CommandError, match="No space left on device"):
            _train()
    assert _files(media) == []

    _train()

    assert TrainingRun.objects.filter(status=TrainingRunStatus.SUCCEEDED).count() == 1
    embedding = MLModel.objects.get(kind=ModelKind.EMBEDDING)
    assert embedding.indexes.count() == 1
    assert not [name for name in _files(media) if ".tmp-" in name]


def test_a_full_disk_while_rebuild_index_writes(seeded, media, monkeypatch):
    _train()
    embedding = MLModel.objects.get(kind=ModelKind.EMBEDDING)
    model_activate(model=embedding, actor=None, actor_label="test")
    files_before = _files(media)
    fill_disk(monkeypatch, where="/indexes/")

    with pytest.raises(CommandError, match="No space left on device"):
        call_command("rebuild_index", stdout=StringIO())

    assert IndexArtifact.objects.count() == 1  # the one from training, still there
    assert _files(media) == files_before  # no .tmp-* orphan
    embedding.refresh_from_db()
    assert embedding.is_active
