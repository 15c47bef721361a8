"""Serving recommendations: the per-process model bundle and the two-stage pipeline.

**The bundle.** Each process lazily loads, on its first recommendation, a
:class:`Bundle`: the registry's serving versions (active and challenger embedding and
ranking models, the newest FAISS index of each embedding version), every member in
memory (:class:`~recommender.ml.candidates.Population`: ``build_feature_store`` and
the like graphs over the members and interactions loaded by ``recommender/data.py`` —
the same code as training, fresher than the nightly ``UserFeatures`` rows), and each
embedding version aligned with those members. Nothing happens at import time.

**Hot reload.** :func:`serving_generation` re-reads the registry generation (id of
the latest ``ModelActivation``) and the newest index id at most every
``KINDRED["REGISTRY_POLL_SECONDS"]``. When it moves (a promotion, rollback,
challenger change or index rebuild), or the member store is older than
``KINDRED["SERVING_STORE_REFRESH_SECONDS"]`` (default 600), a new bundle loads in a
background thread (``KINDRED["SERVING_RELOAD_IN_BACKGROUND"]``, default on) while
requests keep using the current one; the swap is one reference assignment. Parts
whose version did not change are reused. A failed load (checksum mismatch, missing
file, incompatible model) keeps the whole previous bundle, flags health degraded and
is retried when the generation moves again or after a minute.

**A request** (:func:`recommendations_compute`): the viewer's profile, preferences and
interactions are read fresh (2 queries); then ``recommender.ml.recommend.pipeline_run``
— the one pipeline, which the offline evaluation measures as is: the hard filters
over the population, the candidate sources (liked-you, graph neighbours, FAISS,
content, popular, explore), the arm's ranking model on both directions of each pair
(score = p(viewer likes c) x p(c likes viewer) ** the model's reciprocal weight) and
a freshness boost; ONE query re-checks the best candidates against the database
(profiles and preferences may have changed since the load); maximal marginal
relevance over the appeal vectors spreads the final list; each result gets a short
reason.

**Read replica** (``DATABASE_REPLICA_URL``, ``config.db_routers``): the member
store's loads (every member and interaction) read from the replica (the primary if
it fails). Everything a request reads comes from the primary: the viewer's own
rows, the registry, and the shortlist re-check and random fallback, which have the
last word on what is shown (a member who hid their profile, blocked the viewer or
deleted their account a moment ago is never shown, replica lag or not).

**Degradation**, in :data:`STRATEGIES` order: ``full`` → ``unranked`` (no ranking model
for the arm, or it raised: candidate scores) → ``content_popularity`` (no embedding
or index: content, popularity and exploration sources) → ``random`` (no member store,
or the pipeline failed: random allowed members straight from the database).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection, connections
from django.utils import timezone

from config.api import ApplicationError
from config.db_routers import (
    REPLICA,
    replica_available,
    replica_failed,
    replica_or_primary,
)
from recommender import data as db
from recommender import metrics
from recommender.artifacts import index_artifact_load, model_artifact_load
from recommender.filters import (
    MemberFacts,
    Viewer,
    random_allowed,
    shortlist_check,
    viewer_load,
)
from recommender.ml.candidates import (
    COLLABORATIVE,
    CONTENT,
    EXPLORE,
    LIKED_YOU,
    NEIGHBOURS,
    POPULAR,
    Candidates,
    Embedding,
    Population,
    embedding_align,
    population_build,
)
from recommender.ml.features import FEATURE_VERSION
from recommender.ml.recommend import (
    PipelineResult,
    diversify,
    pipeline_run,
    shortlist_size,
)
from registry.models import IndexArtifact, MLModel, ModelKind
from registry.selectors import registry_generation

logger = logging.getLogger(__name__)

STRATEGIES = ("full", "unranked", "content_popularity", "random")
STAGES = ("filters", "candidates", "ranking", "postprocess")

RETRY_SECONDS = 60.0
DEFAULT_STORE_REFRESH_SECONDS = 600.0
# How long a request waits for its process's first load before answering without
# models (KINDRED["SERVING_FIRST_LOAD_WAIT_SECONDS"]).
DEFAULT_FIRST_LOAD_WAIT_SECONDS = 10.0


# --- the interface -----------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """A member's A/B assignment: ``experiment`` ("" without a challenger, else
    e.g. "ranking-v5-vs-v4"), ``arm`` ("control" | "challenger" | "") and the
    ``model_ids`` (kind -> ``MLModel`` pk) serving the member."""

    experiment: str
    arm: str
    model_ids: dict[str, int] = field(default_factory=dict)


@dataclass
class Recommendation:
    user_id: int
    display_name: str
    age: int
    city: str
    interests: list[str]
    score: float
    rank: int
    sources: list[str]
    reason: str


@dataclass
class RecommendationResult:
    results: list[Recommendation]
    strategy: str
    model_versions: dict[str, int]
    experiment: Arm
    generation: str
    stage_seconds: dict[str, float]
    # Answered without models only because this process's first load was still
    # running: a moment later the same request gets the full answer, so the
    # result cache must not keep this one.
    provisional: bool = False


# --- registry snapshot and A/B arms ------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    pk: int
    kind: str
    version: int
    traffic_percent: int = 0


@dataclass(frozen=True)
class RegistrySnapshot:
    """Which versions serve: ``active`` and ``challengers`` by kind, and the newest
    index id of each embedding version among them (``indexes``)."""

    active: dict[str, ModelRef] = field(default_factory=dict)
    challengers: dict[str, ModelRef] = field(default_factory=dict)
    indexes: dict[int, int] = field(default_factory=dict)

    def key(self) -> tuple:
        return (
            tuple(sorted((k, m.pk) for k, m in self.active.items())),
            tuple(sorted((k, m.pk) for k, m in self.challengers.items())),
            tuple(sorted(self.indexes.items())),
        )

    def model_ids(self, kind: str) -> list[int]:
        refs = [self.active.get(kind), self.challengers.get(kind)]
        return [ref.pk for ref in refs if ref is not None]

    def version_of(self, pk: int) -> int | None:
        for ref in (*self.active.values(), *self.challengers.values()):
            if ref.pk == pk:
                return ref.version
        return None


def _registry_snapshot() -> RegistrySnapshot:
    rows = MLModel.objects.filter(is_active=True) | MLModel.objects.filter(
        traffic_percent__gt=0
    )
    active, challengers = {}, {}
    for pk, kind, version, is_active, traffic in rows.values_list(
        "pk", "kind", "version", "is_active", "traffic_percent"
    ):
        ref = ModelRef(pk=pk, kind=kind, version=version, traffic_percent=traffic)
        (active if is_active else challengers)[kind] = ref
    embedding_ids = [
        ref.pk
        for ref in (
            active.get(ModelKind.EMBEDDING),
            challengers.get(ModelKind.EMBEDDING),
        )
        if ref is not None
    ]
    indexes = {}
    for embedding_id, index_id in (
        IndexArtifact.objects.filter(embedding_model_id__in=embedding_ids)
        .order_by("embedding_model_id", "created_at", "id")
        .values_list("embedding_model_id", "id")
    ):
        indexes[embedding_id] = index_id  # the newest wins
    return RegistrySnapshot(active=active, challengers=challengers, indexes=indexes)


def _bucket(experiment: str, user_id: int) -> int:
    digest = hashlib.sha256(f"{experiment}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def experiment_name(*, challengers: Mapping, active: Mapping) -> str:
    """The name impressions are labelled with, e.g. ``ranking-v5-vs-v4``: per kind
    with a challenger, in kind order and joined by ``+``, the challenger's version
    against the active one's (0 without one). ``challengers`` and ``active`` map a
    kind to anything with a ``version`` (``ModelRef``, ``MLModel``); the guardrail
    finds an experiment's impressions by this name."""
    return "+".join(
        f"{kind}-v{challengers[kind].version}-vs-v"
        f"{active[kind].version if kind in active else 0}"
        for kind in sorted(challengers)
    )


def _arm(snapshot: RegistrySnapshot, user_id: int) -> Arm:
    model_ids = {kind: ref.pk for kind, ref in snapshot.active.items()}
    if not snapshot.challengers:
        return Arm(experiment="", arm="", model_ids=model_ids)
    experiment = experiment_name(
        challengers=snapshot.challengers, active=snapshot.active
    )
    percent = min(ref.traffic_percent for ref in snapshot.challengers.values())
    if _bucket(experiment, user_id) < percent:
        model_ids.update({k: ref.pk for k, ref in snapshot.challengers.items()})
        return Arm(experiment=experiment, arm="challenger", model_ids=model_ids)
    return Arm(experiment=experiment, arm="control", model_ids=model_ids)


def arm_for(*, user_id: int) -> Arm:
    """The member's A/B arm: a stable bucket, sha256 of experiment and user id
    modulo 100, below the challenger's ``traffic_percent`` = challenger (several
    kinds with challengers form one experiment at the smallest share). Uses the
    registry state of this process's bundle (read from the database when none is
    loaded yet)."""
    bundle = _state.bundle
    snapshot = bundle.snapshot if bundle is not None else _registry_snapshot()
    return _arm(snapshot, user_id)


# --- the bundle --------------------------------------------------------------------


@dataclass
class RankingEntry:
    model_id: int
    version: int
    model: object  # recommender.ml.ranking.RankingModel


@dataclass
class Bundle:
    """What one process serves with; replaced as a whole, never mutated."""

    generation: str
    snapshot: RegistrySnapshot
    population: Population | None
    embeddings: dict[int, Embedding]
    rankings: dict[int, RankingEntry]
    loaded_at: float  # unix seconds
    load_seconds: float
    # Parts that failed to load (a partial bundle, served only when there was no
    # complete one to keep); they are retried every RETRY_SECONDS.
    errors: list[str] = field(default_factory=list)


class _ServingState:
    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards the fields below
        self.load_done = threading.Condition(self.lock)  # notified when loading ends
        self.load_lock = threading.Lock()  # one load at a time
        self.generation_lock = threading.Lock()  # one generation re-read at a time
        self.bundle: Bundle | None = None
        self.generation: str | None = None
        self.checked_at = -math.inf
        self.loading = False
        self.thread: threading.Thread | None = None
        self.attempted: str | None = None
        self.attempted_at = -math.inf
        self.degraded = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None


_state = _ServingState()


def _kindred(name: str, default):
    return settings.KINDRED.get(name, default)


def _read_generation() -> str:
    newest_index = (
        IndexArtifact.objects.order_by("-id").values_list("id", flat=True).first()
    )
    return f"{registry_generation()}.{newest_index or 0}"


def serving_generation() -> str:
    """The serving generation, "<registry generation>.<newest index id>": changes
    with every promotion, rollback, challenger change and index build. Re-read from
    the database at most every ``KINDRED["REGISTRY_POLL_SECONDS"]`` per process."""
    poll = float(settings.KINDRED["REGISTRY_POLL_SECONDS"])
    now = time.monotonic()
    known = _state.generation
    if known is not None and now - _state.checked_at < poll:
        return known
    # One thread of the process re-reads it; the others keep answering with the
    # known generation meanwhile instead of all querying at once (under load the
    # query is slow, and every thread of a worker crossed the poll together:
    # py-spy had it at ~28% of cache-hit request time at 100,000 members).
    if not _state.generation_lock.acquire(blocking=known is None):
        return known
    try:
        if _state.generation is not None and (
            time.monotonic() - _state.checked_at < poll
        ):
            return _state.generation  # another thread just re-read it
        try:
            generation = _read_generation()
        except Exception:  # noqa: BLE001 - keep serving what is loaded
            logger.warning("registry generation unreadable", exc_info=True)
            return _state.generation or "0.0"
        _state.generation, _state.checked_at = generation, now
        return generation
    finally:
        _state.generation_lock.release()


def _store_is_stale(bundle: Bundle) -> bool:
    limit = float(
        _kindred("SERVING_STORE_REFRESH_SECONDS", DEFAULT_STORE_REFRESH_SECONDS)
    )
    return bundle.population is not None and time.time() - bundle.loaded_at > limit


def _bundle_for_request() -> Bundle | None:
    generation = serving_generation()
    bundle = _state.bundle
    if bundle is None:
        return _first_bundle(generation)
    if _needs_reload(bundle, generation):
        _reload_soon(generation)
    return _state.bundle  # the new one if the reload ran inline


def _first_bundle(generation: str) -> Bundle | None:
    """Nothing loaded in this process yet: start the load, or join the one in
    progress, and wait for it (at most ``SERVING_FIRST_LOAD_WAIT_SECONDS``) rather
    than answer without models. ``None`` when the load failed just now (retried
    after ``RETRY_SECONDS``) or is still running after the wait."""
    _reload_soon(generation)  # a no-op while a load runs or just failed
    wait = float(
        _kindred("SERVING_FIRST_LOAD_WAIT_SECONDS", DEFAULT_FIRST_LOAD_WAIT_SECONDS)
    )
    with _state.load_done:
        _state.load_done.wait_for(lambda: not _state.loading, timeout=wait)
    return _state.bundle


def _provisional(bundle: Bundle | None) -> bool:
    """A request served without a bundle only because the first load was (or
    still is) under way: not a lasting answer."""
    return bundle is None and (_state.loading or _state.bundle is not None)


def _needs_reload(bundle: Bundle, generation: str) -> bool:
    retry_partial = bundle.errors and (
        time.monotonic() - _state.attempted_at >= RETRY_SECONDS
    )
    return bool(
        bundle.generation != generation or _store_is_stale(bundle) or retry_partial
    )


def _reload_soon(generation: str) -> None:
    with _state.lock:
        if _state.loading:
            return
        recently_failed = _state.attempted == generation and (
            time.monotonic() - _state.attempted_at < RETRY_SECONDS
        )
        bundle = _state.bundle
        if recently_failed and (bundle is None or not _store_is_stale(bundle)):
            return
        _state.loading = True
    if not _kindred("SERVING_RELOAD_IN_BACKGROUND", True):
        try:
            _load(generation)
        finally:
            _load_finished()
        return
    thread = threading.Thread(
        target=_load_in_thread, args=(generation,), name="kindred-reload", daemon=True
    )
    _state.thread = thread
    thread.start()


def _load_in_thread(generation: str) -> None:
    try:
        _load(generation)
    except Exception:  # noqa: BLE001 - logged; the previous bundle keeps serving
        logger.exception("serving bundle reload failed")
    finally:
        _load_finished()
        connections.close_all()  # this thread's own connections


def _load_finished() -> None:
    with _state.load_done:
        _state.loading = False
        _state.load_done.notify_all()


@contextlib.contextmanager
def _without_statement_timeout():
    """A load reads whole tables: lift the web processes' statement timeout
    (``WEB_STATEMENT_TIMEOUT``) for its queries, on the primary and on the read
    replica it reads members from, then restore it."""
    if not getattr(settings, "WEB_DATABASE_DEADLINE", 0) or (
        connection.vendor != "postgresql"
    ):
        yield
        return
    lifted = []
    for database in (connection, connections[REPLICA] if replica_available() else None):
        if database is None:
            continue
        try:
            with database.cursor() as cursor:
                cursor.execute("SET statement_timeout = 0")
            lifted.append(database)
        except DatabaseError as error:
            if database.alias == REPLICA:
                replica_failed(error)  # the load reads from the primary
            else:
                logger.warning(
                    "statement timeout not lifted for the load", exc_info=True
                )
    try:
        yield
    finally:
        for database in lifted:
            try:
                with database.cursor() as cursor:
                    cursor.execute("RESET statement_timeout")
            except DatabaseError:
                database.close()  # a connection left without its timeout is dropped


def _load(generation: str) -> None:
    """Load the bundle for ``generation`` and swap it in (see the module doc)."""
    with _state.load_lock, _without_statement_timeout():
        old = _state.bundle
        if old is not None and not _needs_reload(old, generation):
            return  # another thread loaded it while this one waited
        _state.attempted, _state.attempted_at = generation, time.monotonic()
        started = time.monotonic()
        errors: list[str] = []
        try:
            snapshot = _registry_snapshot()
        except Exception as error:  # noqa: BLE001
            _record_failure([f"registry unreadable: {error}"], keep=old)
            return
        if (
            old is not None
            and old.snapshot.key() == snapshot.key()
            and not _store_is_stale(old)
            and not old.errors
        ):
            # Nothing to load (e.g. only a traffic share changed).
            _swap(dataclasses.replace(old, generation=generation, snapshot=snapshot))
            return
        bundle = _build_bundle(generation, snapshot, old, errors)
        bundle.load_seconds = time.monotonic() - started
        metrics.SERVING_LOAD_SECONDS.observe(bundle.load_seconds)
        if errors:
            bundle.errors = errors
            if old is not None and not old.errors:
                _record_failure(errors, keep=old)
                return
            _record_failure(errors, keep=None)
            _swap(bundle, clear_degraded=False)
            return
        _swap(bundle)
        logger.info(
            "serving bundle %s loaded in %.2fs (%s members)",
            generation,
            bundle.load_seconds,
            bundle.population.n if bundle.population else 0,
        )


def _record_failure(errors: list[str], *, keep: Bundle | None) -> None:
    message = "; ".join(errors)
    logger.error(
        "serving bundle load failed (%s): %s",
        "keeping the previous bundle" if keep is not None else "serving degraded",
        message,
    )
    metrics.SERVING_LOAD_FAILURES.inc()
    metrics.SERVING_DEGRADED.set(1)
    with _state.lock:
        _state.degraded = True
        _state.last_error, _state.last_error_at = message, time.time()


def _swap(bundle: Bundle, *, clear_degraded: bool = True) -> None:
    _state.bundle = bundle  # the atomic swap: one reference assignment
    if clear_degraded:
        with _state.lock:
            _state.degraded = False
        metrics.SERVING_DEGRADED.set(0)
    _export_versions(bundle)


def _build_bundle(
    generation: str, snapshot: RegistrySnapshot, old: Bundle | None, errors: list
) -> Bundle:
    loaded_at = time.time()
    old_embeddings = old.embeddings if old is not None else {}
    embedding_models = {}
    for pk in snapshot.model_ids(ModelKind.EMBEDDING):
        if pk in old_embeddings:
            embedding_models[pk] = old_embeddings[pk].model
            continue
        try:
            embedding_models[pk] = model_artifact_load(model=MLModel.objects.get(pk=pk))
        except Exception as error:  # noqa: BLE001
            errors.append(f"embedding model {pk}: {error}")

    active = snapshot.active.get(ModelKind.EMBEDDING)
    vocabulary = None
    if active is not None and active.pk in embedding_models:
        vocabulary = tuple(embedding_models[active.pk].vocabulary)
    population = None
    reuse_population = (
        old is not None
        and old.population is not None
        and not _store_is_stale(old)
        and (vocabulary is None or vocabulary == old.population.store.vocabulary)
    )
    if reuse_population:
        population, loaded_at = old.population, old.loaded_at
    else:
        try:
            population = _population_load(vocabulary)
        except Exception as error:  # noqa: BLE001
            errors.append(f"member store: {error}")

    embeddings = {}
    if population is not None:
        for pk, model in embedding_models.items():
            try:
                embeddings[pk] = _embedding_for(
                    pk, model, snapshot, population, old, reuse_population
                )
            except Exception as error:  # noqa: BLE001
                errors.append(f"index of embedding model {pk}: {error}")

    rankings = {}
    old_rankings = old.rankings if old is not None else {}
    for pk in snapshot.model_ids(ModelKind.RANKING):
        if pk in old_rankings:
            rankings[pk] = old_rankings[pk]
            continue
        try:
            model = model_artifact_load(model=MLModel.objects.get(pk=pk))
            feature_version = getattr(model, "feature_version", None)
            if feature_version != FEATURE_VERSION:
                raise ValueError(
                    f"uses features {feature_version!r}, serving computes "
                    f"{FEATURE_VERSION!r}"
                )
            rankings[pk] = RankingEntry(pk, snapshot.version_of(pk), model)
        except Exception as error:  # noqa: BLE001
            errors.append(f"ranking model {pk}: {error}")
    return Bundle(
        generation=generation,
        snapshot=snapshot,
        population=population,
        embeddings=embeddings,
        rankings=rankings,
        loaded_at=loaded_at,
        load_seconds=0.0,
    )


def _population_load(vocabulary) -> Population:
    members, interactions, inactive = replica_or_primary(_member_tables_read)
    return population_build(
        members, interactions, inactive_user_ids=inactive, vocabulary=vocabulary
    )


def _member_tables_read():
    """Every member, interaction and closed account (from the read replica when
    there is one: see ``config.db_routers``)."""
    from accounts.models import User

    members = db.members_load()
    interactions = db.interactions_load()
    inactive = np.asarray(
        User.objects.filter(is_active=False).values_list("id", flat=True),
        dtype=np.int64,
    )
    return members, interactions, inactive


def _embedding_for(pk, model, snapshot, population, old, reuse_population) -> Embedding:
    index_id = snapshot.indexes.get(pk)
    previous = old.embeddings.get(pk) if old is not None else None
    if previous is not None and reuse_population:
        taste, appeal, learned = previous.taste, previous.appeal, previous.learned_taste
    else:
        taste, appeal, learned = embedding_align(model, population)
    if previous is not None and previous.index_id == index_id:
        index = previous.index
    elif index_id is None:
        index = None
    else:
        index = index_artifact_load(index=IndexArtifact.objects.get(pk=index_id))
    return Embedding(
        model_id=pk,
        version=snapshot.version_of(pk),
        model=model,
        taste=taste,
        appeal=appeal,
        learned_taste=learned,
        index=index,
        index_id=index_id if index is not None else None,
    )


def _export_versions(bundle: Bundle) -> None:
    metrics.MODEL_VERSION_INFO.clear()
    for kind in ModelKind.values:
        active = bundle.snapshot.active.get(kind)
        loaded = active is not None and (
            active.pk in bundle.embeddings or active.pk in bundle.rankings
        )
        metrics.ACTIVE_MODEL_VERSION.labels(kind=kind).set(
            active.version if loaded else 0
        )
    for role, refs in (
        ("active", bundle.snapshot.active),
        ("challenger", bundle.snapshot.challengers),
    ):
        for kind, ref in refs.items():
            if ref.pk in bundle.embeddings or ref.pk in bundle.rankings:
                metrics.MODEL_VERSION_INFO.labels(
                    kind=kind, version=str(ref.version), role=role
                ).set(1)
    active = bundle.snapshot.active.get(ModelKind.EMBEDDING)
    embedding = bundle.embeddings.get(active.pk) if active is not None else None
    metrics.SERVING_INDEX_SIZE.set(embedding.index_size if embedding else 0)


# --- helpers for tests and operations ----------------------------------------------


def serving_reset() -> None:
    """Forget the loaded bundle and poll state (tests; a fresh process)."""
    serving_wait_idle()
    with _state.lock:
        _state.bundle = None
        _state.generation = None
        _state.checked_at = -math.inf
        _state.attempted, _state.attempted_at = None, -math.inf
        _state.degraded = False
        _state.last_error = _state.last_error_at = None


def serving_refresh() -> str:
    """Poll the registry now and, if the generation moved, reload synchronously
    (what the background reload would do). Returns the generation."""
    serving_wait_idle()
    _state.checked_at = -math.inf
    generation = serving_generation()
    bundle = _state.bundle
    if bundle is None or bundle.generation != generation:
        _load(generation)
    return generation


def serving_wait_idle(timeout: float = 60.0) -> None:
    """Wait for a background reload in progress, if any."""
    thread = _state.thread
    if thread is not None and thread.is_alive():
        thread.join(timeout)


def serving_health() -> dict:
    """This process's serving state: the loaded generation and versions, index
    size, members in memory, whether the last load failed (``degraded``, with the
    error) and whether a reload is running. Never loads anything."""
    bundle = _state.bundle
    health = {
        "loaded": bundle is not None,
        "degraded": _state.degraded,
        "last_error": _state.last_error,
        "last_error_at": _iso(_state.last_error_at),
        "loading": _state.loading,
        "registry_generation": _state.generation,
    }
    if bundle is None:
        return {**health, "status": "degraded" if _state.degraded else "not_loaded"}
    models = []
    for role, refs in (
        ("active", bundle.snapshot.active),
        ("challenger", bundle.snapshot.challengers),
    ):
        for kind, ref in sorted(refs.items()):
            loaded = ref.pk in bundle.embeddings or ref.pk in bundle.rankings
            models.append(
                {
                    "kind": kind,
                    "id": ref.pk,
                    "version": ref.version,
                    "role": role,
                    "traffic_percent": ref.traffic_percent,
                    "loaded": loaded,
                }
            )
    active = bundle.snapshot.active.get(ModelKind.EMBEDDING)
    embedding = bundle.embeddings.get(active.pk) if active is not None else None
    status = "degraded" if _state.degraded else "ok"
    if not bundle.snapshot.active and status == "ok":
        status = "no_models"  # a fresh install: content/popularity serve
    return {
        **health,
        "status": status,
        "generation": bundle.generation,
        "loaded_at": _iso(bundle.loaded_at),
        "load_seconds": round(bundle.load_seconds, 3),
        "members": bundle.population.n if bundle.population is not None else 0,
        "models": models,
        "index": {
            "id": embedding.index_id if embedding else None,
            "vectors": embedding.index_size if embedding else 0,
        },
    }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat()


# --- the request -------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now


def recommendations_compute(*, user, limit: int) -> RecommendationResult:
    """Up to ``limit`` members to show ``user``, best first, with the strategy used,
    the model versions, the member's A/B arm and per-stage timings.

    Every result satisfies the hard filters against fresh database rows. Never
    raises for a lesser answer: it degrades (see the module docstring). Raises
    ``ApplicationError`` (404) only when the user has no profile.
    """
    clock = _Clock()
    user_id = int(user.pk)
    try:
        bundle = _bundle_for_request()
    except Exception:  # noqa: BLE001 - serve without models
        logger.exception("serving bundle unavailable")
        bundle = None
    snapshot = bundle.snapshot if bundle is not None else RegistrySnapshot()
    arm = _arm(snapshot, user_id)
    viewer = _viewer_load(user_id)
    clock.lap("filters")
    today = timezone.localdate()
    result = None
    if bundle is not None and bundle.population is not None:
        try:
            result = _compute(bundle, arm, viewer, limit, today, clock)
        except Exception:  # noqa: BLE001 - a lesser answer exists
            logger.exception("recommendation pipeline failed for %s", user_id)
    if result is None or (not result[0] and limit > 0):
        # Nothing from the pipeline: random allowed members, if the database has
        # any (an empty pipeline answer stays as it was when it has none either).
        fallback = _random(viewer, limit, today)
        if result is None or fallback:
            result = fallback, "random", {}, {}
        clock.lap("postprocess")
    results, strategy, versions, model_ids = result
    metrics.RECOMMENDATIONS_STRATEGY.labels(strategy=strategy).inc()
    for stage, seconds in clock.seconds.items():
        metrics.RECOMMENDATION_STAGE_SECONDS.labels(stage=stage).observe(seconds)
    return RecommendationResult(
        results=results,
        strategy=strategy,
        model_versions=versions,
        experiment=dataclasses.replace(arm, model_ids=model_ids),
        generation=bundle.generation if bundle is not None else serving_generation(),
        stage_seconds=clock.seconds,
        provisional=_provisional(bundle),
    )


def _viewer_load(user_id: int) -> Viewer:
    viewer = viewer_load(user_id=user_id)
    if viewer is None:
        raise ApplicationError(
            "Create your profile before asking for recommendations.",
            field="profile",
            status_code=404,
        )
    return viewer


def _now() -> float:
    """Unix seconds the request's features describe (tests pin it)."""
    return time.time()


def _rng() -> np.random.Generator:
    """The exploration source's randomness (a fresh, unseeded generator per
    request; tests seed it to compare serving with the offline evaluation)."""
    return np.random.default_rng()


def _compute(bundle, arm, viewer, limit, today, clock):
    """The pipeline (``recommender.ml.recommend.pipeline_run``, the same function
    the offline evaluation measures) with the arm's models, then the database
    re-check of the shortlist and the diversity step."""
    population = bundle.population
    embedding = bundle.embeddings.get(arm.model_ids.get(ModelKind.EMBEDDING, -1))
    if embedding is not None and embedding.index is None:
        embedding = None  # no index: content and popularity only
    ranking = bundle.rankings.get(arm.model_ids.get(ModelKind.RANKING, -1))
    if embedding is None:
        ranking = None  # the ranking model's features include the embeddings

    def ranking_failed(error: Exception) -> None:
        logger.error(
            "ranking model %s failed; unranked",
            ranking.model_id,
            exc_info=(type(error), error, error.__traceback__),
        )

    result = pipeline_run(
        population,
        viewer,
        embedding=embedding,
        model=ranking.model if ranking is not None else None,
        today=today,
        now_ts=_now(),
        rng=_rng(),
        on_ranking_error=ranking_failed,
        lap=clock.lap,
    )
    versions, model_ids = {}, {}
    if embedding is not None:
        strategy = "unranked"
        versions = {"embedding": embedding.version, "index": embedding.index_id}
        model_ids = {"embedding": embedding.model_id}
    else:
        strategy = "content_popularity"
    if result.ranked:
        strategy = "full"
        versions["ranking"] = ranking.version
        model_ids["ranking"] = ranking.model_id
    results = _postprocess(population, embedding, viewer, result, limit, today)
    clock.lap("postprocess")
    return results, strategy, versions, model_ids


def _postprocess(
    population: Population,
    embedding: Embedding | None,
    viewer: Viewer,
    result: PipelineResult,
    limit: int,
    today: dt.date,
) -> list[Recommendation]:
    store = population.store
    candidates = result.candidates
    rows = candidates.positions
    order = result.order
    # Re-check the best against the database; a second batch only if the first
    # lost too many (the store is minutes old, so this is rare).
    size = shortlist_size(limit)
    chosen: list[int] = []
    facts: dict[int, MemberFacts] = {}
    for start in (0, size):
        batch = order[start : start + size]
        if not batch.size:
            break
        ids = store.user_id[rows[batch]].tolist()
        allowed = shortlist_check(
            viewer=viewer.facts,
            candidate_ids=ids,
            excluded=viewer.excluded,
            today=today,
        )
        for candidate in allowed:
            facts[candidate.user_id] = candidate
        position = {user_id: i for i, user_id in enumerate(ids)}
        chosen.extend(int(batch[position[c.user_id]]) for c in allowed)
        if len(chosen) >= limit:
            break
    if not chosen:
        return []
    picked = diversify(
        np.asarray(chosen, dtype=np.int64),
        result.scores,
        rows,
        appeal=embedding.appeal if embedding is not None else None,
        store=store,
        limit=limit,
    )
    return [
        _recommendation(
            facts[int(store.user_id[rows[i]])],
            viewer.facts,
            candidates,
            int(i),
            float(result.scores[i]),
            rank,
            bool(result.new[i]),
            today,
        )
        for rank, i in enumerate(picked, start=1)
    ]


def _recommendation(
    candidate: MemberFacts,
    viewer: MemberFacts,
    candidates: Candidates,
    i: int,
    score: float,
    rank: int,
    new: bool,
    today: dt.date,
) -> Recommendation:
    interests = [str(x) for x in candidate.interests or []]
    return Recommendation(
        user_id=candidate.user_id,
        display_name=candidate.display_name,
        age=candidate.age_on(today),
        city=candidate.city,
        interests=interests,
        score=round(float(score), 6),
        rank=rank,
        sources=candidates.sources_of(i),
        reason=_reason(int(candidates.tags[i]), viewer, candidate, interests, new),
    )


def _reason(tags, viewer, candidate, interests, new) -> str:
    mine = {_norm(x) for x in viewer.interests or []}
    shared = [x for x in interests if _norm(x) in mine]
    if tags & LIKED_YOU:
        return "a likely match"
    if tags & CONTENT and len(shared) >= 2:
        return f"likes {shared[0]} and {shared[1]} like you"
    if tags & (COLLABORATIVE | NEIGHBOURS):
        return "people with your taste liked them"
    if new:
        return "new here"
    if tags & POPULAR:
        near = viewer.city and viewer.city == candidate.city
        return "popular near you" if near else "popular right now"
    if shared:
        return f"likes {shared[0]} like you"
    if tags & EXPLORE:
        return "someone new to discover"
    return "matches what you are looking for"


def _norm(value) -> str:
    return " ".join(str(value).split()).lower()


def _random(viewer: Viewer, limit: int, today: dt.date) -> list[Recommendation]:
    try:
        chosen = random_allowed(
            viewer=viewer.facts,
            excluded=viewer.excluded,
            limit=limit,
            today=today,
            rng=np.random.default_rng(),
        )
    except Exception:  # noqa: BLE001 - nothing lesser left: an empty answer
        logger.exception("random fallback failed for %s", viewer.user_id)
        return []
    return [
        Recommendation(
            user_id=c.user_id,
            display_name=c.display_name,
            age=c.age_on(today),
            city=c.city,
            interests=[str(x) for x in c.interests or []],
            score=0.0,
            rank=rank,
            sources=["explore"],
            reason="someone new to discover",
        )
        for rank, c in enumerate(chosen, start=1)
    ]
