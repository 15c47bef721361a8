"""Promotion policy: the gate of a new ranking version against the active one
(:func:`compare_with_active`) and the automatic promotion a run decides from it
(:func:`auto_promote`, only with ``KINDRED["AUTO_PROMOTE"]``).
"""

from __future__ import annotations

import logging
import math

from django.conf import settings

from recommender.artifacts import model_artifact_load
from recommender.ml.features import FEATURE_VERSION
from recommender.models import TrainingRun
from registry.models import MLModel, ModelKind
from registry.selectors import model_get_active
from registry.services import model_activate

logger = logging.getLogger(__name__)

AUTO_PROMOTION_ACTOR = "auto-promotion"


def compare_with_active(result) -> dict:
    """Score the new model and the active ranking version on the same holdout (same
    viewers, pairs, feature store and embeddings).

    What decides is the question serving answers: how each model ranks the
    holdout viewers' served candidates among everyone eligible (``everyone``:
    NDCG@10 of likes plus NDCG@10 of mutual likes, ``pipeline.evaluate_everyone``),
    then, on a tie or where no holdout viewer could be ranked, the NDCG@10 and AUC
    of like vs dislike among the rated holdout pairs. A model that only tells a
    like from a dislike once a pair was shown must not replace one that finds who
    gets chosen. With no active version there is nothing to beat; an active
    version that cannot be scored (other feature version, unreadable artifact) is
    not beaten automatically: a person decides. The new model's figures are the
    stage's own (``result.metrics``, measured on these very rows); only the active
    version is scored here.
    """
    from recommender.ml import pipeline

    def holdout_scores(model) -> dict:
        scores = pipeline.evaluate_ranking(
            model, result.holdout, result.holdout_pairs, rows=result.holdout_rows
        )
        everyone = None
        if result.everyone_rows is not None:
            everyone = pipeline.evaluate_everyone(model, result.everyone_rows)
        return _gate_scores(scores, everyone)

    new = _gate_scores(result.metrics, result.metrics.get("holdout_everyone"))
    active = model_get_active(kind=ModelKind.RANKING)
    if active is None:
        return {"active_version": None, "new": new, "beats_active": True}
    try:
        active_model = model_artifact_load(model=active)
        if getattr(active_model, "feature_version", None) != FEATURE_VERSION:
            raise ValueError(
                f"it uses features {getattr(active_model, 'feature_version', '?')}, "
                f"not {FEATURE_VERSION}"
            )
        old = holdout_scores(active_model)
    except Exception as error:  # noqa: BLE001 - an unreadable rival is not a win
        logger.warning("could not score active ranking v%s: %s", active.version, error)
        return {
            "active_version": active.version,
            "new": new,
            "active": None,
            "beats_active": False,
            "reason": f"active version not comparable: {error}",
        }
    beats = _gate_rank(new) > _gate_rank(old)
    return {
        "active_version": active.version,
        "new": new,
        "active": old,
        "beats_active": bool(beats),
    }


def auto_promote(run: TrainingRun) -> list[dict]:
    if not settings.KINDRED["AUTO_PROMOTE"]:
        return [{"promoted": False, "reason": "AUTO_PROMOTE is off"}]
    gate = run.summary.get("ranking_gate") or {}
    decisions = []
    ranking_wins = bool(gate.get("beats_active")) and run.ranking_model_id is not None
    if run.ranking_model_id is not None:
        decisions.append(
            _promote_if(
                run.ranking_model_id,
                ranking_wins,
                _gate_reason(gate),
            )
        )
    if run.embedding_model_id is not None:
        no_active = model_get_active(kind=ModelKind.EMBEDDING) is None
        decisions.append(
            _promote_if(
                run.embedding_model_id,
                ranking_wins or no_active,
                "no active embedding version"
                if no_active
                else "promoted with its ranking model: " + _gate_reason(gate),
            )
        )
    return decisions


GATE_ORDER = ("everyone", "ndcg@10", "auc")


def _gate_scores(holdout: dict, everyone: dict | None) -> dict:
    """The gate's figures of one model: ``everyone``'s objective (None without
    holdout viewers to rank), then the rated pairs' NDCG@10 and AUC."""
    return {
        "everyone": None if everyone is None else everyone["objective"],
        **{key: holdout.get(key) for key in ("auc", "ndcg@10")},
    }


def _gate_rank(scores: dict) -> tuple:
    """``scores`` in the gate's order of precedence; a missing (None or nan) figure
    ranks last."""
    values = (scores[key] for key in GATE_ORDER)
    return tuple(
        float("-inf") if value is None or math.isnan(value) else value
        for value in values
    )


def _gate_reason(gate: dict) -> str:
    if gate.get("active_version") is None:
        return "no active ranking version"
    return (
        f"holdout new {gate.get('new')} vs active v{gate.get('active_version')} "
        f"{gate.get('active')}" + (f" ({gate['reason']})" if gate.get("reason") else "")
    )


def _promote_if(model_id: int, condition: bool, reason: str) -> dict:
    model = MLModel.objects.get(pk=model_id)
    decision = {"kind": model.kind, "version": model.version, "reason": reason}
    if not condition or model.is_active:
        return {**decision, "promoted": False}
    model_activate(
        model=model, actor=None, actor_label=AUTO_PROMOTION_ACTOR, reason=reason
    )
    return {**decision, "promoted": True}
