"""The recommender's components of ``/health``: ``models`` and ``index``.

Registered with the kernel's health view (``config.health``) by
``RecommenderConfig.ready``.
"""

from __future__ import annotations

from config.health import DEGRADED, OK
from registry.models import MLModel, ModelKind
from registry.selectors import index_get_serving

SERVING_COMPONENTS = ("models", "index")


def serving_health_components() -> dict:
    """The registry's active models and index, and what this process has loaded
    (``recommender.serving.serving_health``; a process loads its models on its
    first recommendation, so ``loaded: false`` on a fresh process is normal)."""
    # Imported when /health asks: serving brings numpy and FAISS, which the
    # registration in RecommenderConfig.ready() must not load.
    from recommender.serving import serving_health

    serving = serving_health()
    loaded = {
        (model["kind"], model["version"], model["role"]): model["loaded"]
        for model in serving.get("models", [])
    }
    active = {
        kind: version
        for kind, version in MLModel.objects.filter(is_active=True).values_list(
            "kind", "version"
        )
    }
    missing = [kind for kind in ModelKind.values if kind not in active]
    models = {
        "status": DEGRADED if missing or serving["degraded"] else OK,
        "active": active,
        "loaded_in_this_process": {
            kind: version
            for (kind, version, role), is_loaded in sorted(loaded.items())
            if role == "active" and is_loaded
        },
        "challengers": {
            kind: version
            for (kind, version, role) in sorted(loaded)
            if role == "challenger"
        },
        "serving": serving["status"],
        "generation": serving.get("generation"),
        "loaded_at": serving.get("loaded_at"),
    }
    if missing:
        models["error"] = f"no active version of: {', '.join(missing)}"
    elif serving["degraded"]:
        models["error"] = f"last model load failed: {serving['last_error']}"

    index = index_get_serving()
    index_state = {
        "status": OK if index is not None else DEGRADED,
        "registry": None
        if index is None
        else {
            "id": index.pk,
            "type": index.index_type,
            "vectors": index.n_vectors,
            "embedding_version": index.embedding_model.version,
        },
        "loaded_in_this_process": serving.get("index", {"id": None, "vectors": 0}),
    }
    if index is None:
        index_state["error"] = "no index for the active embedding version"
    return {"models": models, "index": index_state}
