"""The bundle: what one process serves with, built from the registry's artifacts.

A :class:`Bundle` holds the registry's serving versions (active and challenger
embedding and ranking models, the newest FAISS index of each embedding version),
every member in memory (:class:`~recommender.ml.candidates.Population`: the feature
store and like graphs over the members and interactions ``recommender/data.py``
loads — the same code as training, fresher than the nightly ``UserFeatures`` rows)
and each embedding version aligned with those members. :func:`bundle_build` reuses
the parts of the previous bundle whose version did not change; swapping bundles is
``recommender.serving.holder``'s business.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection, connections

from config.db_routers import (
    REPLICA,
    replica_available,
    replica_failed,
    replica_or_primary,
)
from recommender import data as db
from recommender import metrics
from recommender.artifacts import index_artifact_load, model_artifact_load
from recommender.ml.candidates import (
    Embedding,
    Population,
    embedding_align,
    population_build,
)
from recommender.ml.features import FEATURE_VERSION
from recommender.serving.arms import RegistrySnapshot
from registry.models import IndexArtifact, MLModel, ModelKind

logger = logging.getLogger(__name__)

DEFAULT_STORE_REFRESH_SECONDS = 600.0


def kindred_setting(name: str, default):
    return settings.KINDRED.get(name, default)


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


def store_is_stale(bundle: Bundle) -> bool:
    """The member store is older than ``KINDRED["SERVING_STORE_REFRESH_SECONDS"]``."""
    limit = float(
        kindred_setting("SERVING_STORE_REFRESH_SECONDS", DEFAULT_STORE_REFRESH_SECONDS)
    )
    return bundle.population is not None and time.time() - bundle.loaded_at > limit


@contextlib.contextmanager
def statement_timeout_lifted():
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


def bundle_build(
    generation: str, snapshot: RegistrySnapshot, old: Bundle | None
) -> Bundle:
    """The bundle serving ``snapshot``, reusing what ``old`` already holds of it.
    What fails to load is left out and described in the bundle's ``errors``."""
    loaded_at = time.time()
    errors: list[str] = []
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
        and not store_is_stale(old)
        and (vocabulary is None or vocabulary == old.population.store.vocabulary)
    )
    if reuse_population:
        population, loaded_at = old.population, old.loaded_at
    else:
        try:
            population = population_load(vocabulary)
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
        errors=errors,
    )


def population_load(vocabulary) -> Population:
    """Every member in memory, with the embedding's interest ``vocabulary``."""
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


def bundle_versions_export(bundle: Bundle) -> None:
    """Set the model version and index size gauges to what ``bundle`` serves."""
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
