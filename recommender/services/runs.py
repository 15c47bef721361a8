"""TrainingRun life cycle: start (the overlap lock), heartbeat, failure, success.

A ``TrainingRun`` row is the pipeline's lock and log. :func:`training_run_start`
refuses to start while another run is ``running`` with a fresh heartbeat, and takes a
stale one over (its worker died). The stages (``stages``, ``indexes``,
``evaluation``) beat the heartbeat, keep it beating while they compute
(:class:`HeartbeatThread`), lock their run to register what they produced
(:func:`lock_running_run`; :func:`stage_register` when it is a stored artifact) and
record their timings (:func:`record_stage`); they load their data as of the run's
start (:func:`run_data_load`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from config.api import ApplicationError
from recommender import data as db
from recommender.ml.data import InteractionArrays, MemberArrays
from recommender.models import TrainingRun, TrainingRunStatus
from registry.artifacts import artifact_delete
from registry.services import model_discard_unindexed

logger = logging.getLogger(__name__)

SEED = 0

Progress = Callable[[str], None]

T = TypeVar("T")


class TrainingRunNotRunning(Exception):
    """The run finished, failed or was taken over: its stages must not go on."""


@dataclass
class RunData:
    """What a run trains on, loaded once per process (as of the run's start)."""

    members: MemberArrays
    interactions: InteractionArrays
    now_ts: float
    load_seconds: float


# --- the run lock ------------------------------------------------------------------


@transaction.atomic
def training_run_start(*, trigger: str, now: datetime | None = None) -> TrainingRun:
    """Start a training run, or refuse (``ApplicationError``, 409) while another
    one is running with a fresh heartbeat.

    A running run whose heartbeat is older than ``KINDRED["TRAINING_STALE_SECONDS"]``
    belongs to a dead worker: it is marked failed and this run takes over.
    """
    now = now or timezone.now()
    stale_after = timedelta(seconds=settings.KINDRED["TRAINING_STALE_SECONDS"])
    running = list(
        TrainingRun.objects.select_for_update().filter(status=TrainingRunStatus.RUNNING)
    )
    for other in running:
        if now - other.heartbeat_at < stale_after:
            raise ApplicationError(
                f"Training run {other.pk} is already running (stage "
                f"{other.stage or 'starting'}, last heartbeat "
                f"{other.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC).",
                field="training_run",
                status_code=409,
            )
        other.status = TrainingRunStatus.FAILED
        other.finished_at = now
        other.error = "\n".join(
            [
                f"No heartbeat since {other.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC "
                "(worker presumed dead); taken over by a new run.",
                *_run_discard_incomplete(other),
            ]
        )
        other.save(update_fields=["status", "finished_at", "error"])
    try:
        with transaction.atomic():
            return TrainingRun.objects.create(
                trigger=trigger, started_at=now, heartbeat_at=now, summary={}
            )
    except IntegrityError as error:
        # Another run started between our check and our insert (one-running
        # constraint).
        raise ApplicationError(
            "Another training run started at the same time.",
            field="training_run",
            status_code=409,
        ) from error


def training_run_heartbeat(*, run_id: int, stage: str | None = None) -> None:
    """Record that the run is alive (and at ``stage``); raises
    ``TrainingRunNotRunning`` if it is no longer running (e.g. taken over)."""
    fields = {"heartbeat_at": timezone.now()}
    if stage is not None:
        fields["stage"] = stage
    updated = TrainingRun.objects.filter(
        pk=run_id, status=TrainingRunStatus.RUNNING
    ).update(**fields)
    if not updated:
        raise TrainingRunNotRunning(f"Training run {run_id} is not running.")


def training_run_fail(*, run_id: int, error: str) -> list[str]:
    """Mark a running run failed with ``error`` (no-op if it is not running) and
    discard what it registered that cannot serve: an embedding version left without
    an index (e.g. the disk filled up while the index was written). Returns what was
    discarded, in words (also appended to the run's error)."""
    failed = TrainingRun.objects.filter(
        pk=run_id, status=TrainingRunStatus.RUNNING
    ).update(
        status=TrainingRunStatus.FAILED,
        finished_at=timezone.now(),
        error=error[-10_000:],
    )
    if not failed:
        return []
    try:
        with transaction.atomic():
            run = TrainingRun.objects.select_for_update().get(pk=run_id)
            discarded = _run_discard_incomplete(run)
            if discarded:
                run.error = (run.error + "\n" + "\n".join(discarded))[-10_000:]
                run.save(update_fields=["error"])
    except Exception:  # noqa: BLE001 - the run is failed; the rest is tidying
        logger.exception("could not discard what failed run %s registered", run_id)
        return []
    return discarded


def _run_discard_incomplete(run: TrainingRun) -> list[str]:
    """Inside a transaction: delete the run's embedding version if it has no index
    and never served (``registry.services.model_discard_unindexed``)."""
    if run.embedding_model_id is None or run.index_artifact_id is not None:
        return []
    version = model_discard_unindexed(model_id=run.embedding_model_id)
    if version is None:
        return []
    return [
        f"Discarded embedding v{version}: registered by this run, but its index "
        "was never built."
    ]


class HeartbeatThread:
    """Beats the run's heartbeat every few seconds while a stage computes.

    Only when no transaction is open on this thread's connection: a caller holding
    a transaction (e.g. a test) keeps the run row invisible to other connections.
    """

    def __init__(self, run_id: int):
        self.run_id = run_id
        stale = settings.KINDRED["TRAINING_STALE_SECONDS"]
        self.interval = max(1.0, min(30.0, stale / 6))
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if not connection.in_atomic_block:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        from django.db import connection as thread_connection

        try:
            while not self._stop.wait(self.interval):
                try:
                    training_run_heartbeat(run_id=self.run_id)
                except TrainingRunNotRunning:
                    return
                except Exception:  # noqa: BLE001 - a missed beat is not fatal
                    logger.warning("heartbeat of run %s failed", self.run_id)
        finally:
            thread_connection.close()


def lock_running_run(run_id: int) -> TrainingRun:
    """Inside a transaction: the locked run, if it is still running."""
    run = TrainingRun.objects.select_for_update().get(pk=run_id)
    if run.status != TrainingRunStatus.RUNNING:
        raise TrainingRunNotRunning(f"Training run {run_id} is {run.status}.")
    return run


def stage_register(
    *,
    run_id: int,
    done: str,
    artifact_name: str,
    register: Callable[[TrainingRun], T],
) -> T:
    """Register what a stage produced, stored as ``artifact_name``: in one
    transaction, lock the running run and call ``register(run)`` (which saves it).
    If another delivery of the stage registered first (the run's ``done`` relation
    is set), return that instead. The file is deleted, after the transaction,
    unless this call registered it and that committed."""
    registered = False
    try:
        with transaction.atomic():
            run = lock_running_run(run_id)
            if getattr(run, f"{done}_id") is not None:
                result, registers = getattr(run, done), False
            else:
                result, registers = register(run), True
        registered = registers
    finally:
        if not registered:
            artifact_delete(name=artifact_name)
    return result


def record_stage(run: TrainingRun, stage: str, seconds: float, **details) -> None:
    """Record a stage's duration and ``details`` in the run's summary (the caller
    saves the run)."""
    stages = run.summary.setdefault("stages", {})
    stages[stage] = {"seconds": round(seconds, 3), **details}
    run.heartbeat_at = timezone.now()


def run_succeed(run: TrainingRun) -> None:
    """Inside the transaction holding the run's lock: mark it succeeded."""
    run.status = TrainingRunStatus.SUCCEEDED
    run.stage = ""
    run.finished_at = timezone.now()
    run.heartbeat_at = run.finished_at
    total = (run.finished_at - run.started_at).total_seconds()
    run.summary["total_seconds"] = round(total, 3)
    run.save()


# --- data --------------------------------------------------------------------------


def run_data_load(*, run: TrainingRun) -> RunData:
    """Members who joined and interactions created before the run started: each
    pair's verdicts given by then, those replaced by a change of mind included
    (``until``), so the ranking stage's time split sees each pair's verdict as it
    stood at each of its cuts. Stages wanting the run's state use
    ``before(now_ts)`` (``recommender.ml`` functions cut with it)."""
    started = time.monotonic()
    members = db.members_load(joined_before=run.started_at)
    interactions = db.interactions_load(
        created_before=run.started_at, with_history=True
    )
    return RunData(
        members=members,
        interactions=interactions,
        now_ts=run.started_at.timestamp(),
        load_seconds=time.monotonic() - started,
    )
