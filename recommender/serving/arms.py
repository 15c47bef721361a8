"""Which versions serve, and which of them each member sees (the A/B arms)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from registry.models import IndexArtifact, MLModel, ModelKind


@dataclass(frozen=True)
class Arm:
    """A member's A/B assignment: ``experiment`` ("" without a challenger, else
    e.g. "ranking-v5-vs-v4"), ``arm`` ("control" | "challenger" | "") and the
    ``model_ids`` (kind -> ``MLModel`` pk) serving the member."""

    experiment: str
    arm: str
    model_ids: dict[str, int] = field(default_factory=dict)


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


def registry_snapshot_read() -> RegistrySnapshot:
    """The serving versions as the registry has them now (2 queries)."""
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


def arm_of(snapshot: RegistrySnapshot, user_id: int) -> Arm:
    """The member's arm under ``snapshot``: a stable bucket, sha256 of experiment
    and user id modulo 100, below the challenger's ``traffic_percent`` = challenger
    (several kinds with challengers form one experiment at the smallest share)."""
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
