"""What this process serves, for ``/health``: read from the holder, never loading."""

from __future__ import annotations

import datetime as dt

from recommender.serving.holder import bundle_holder
from registry.models import ModelKind


def serving_health() -> dict:
    """This process's serving state: the loaded generation and versions, index
    size, members in memory, whether the last load failed (``degraded``, with the
    error) and whether a reload is running. Never loads anything."""
    holder = bundle_holder()
    bundle = holder.bundle
    health = {
        "loaded": bundle is not None,
        "degraded": holder.degraded,
        "last_error": holder.last_error,
        "last_error_at": _iso(holder.last_error_at),
        "loading": holder.loading,
        "registry_generation": holder.generation,
    }
    if bundle is None:
        return {**health, "status": "degraded" if holder.degraded else "not_loaded"}
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
    status = "degraded" if holder.degraded else "ok"
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
