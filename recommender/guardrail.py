"""The A/B guardrail: a challenger significantly worse than control is stopped.

``experiment_guardrail_check`` (run by Celery beat, ``recommender.tasks``) reads the
A/B report of the experiment serving now, over the impressions since its challenger
started, and tests the challenger arm against the control arm on each guardrail
metric (like rate and match rate per impression; ``recommender.ml.abtest``). When
both arms have at least ``KINDRED["AB_GUARDRAIL_MIN_IMPRESSIONS"]`` impressions and
the challenger's rate is lower at significance ``KINDRED["AB_GUARDRAIL_ALPHA"]``, its
traffic is set to 0 through ``registry.services.model_set_traffic``: locked, with a
``ModelActivation`` row (actor "ab-guardrail") whose reason gives the figures.

Two workers running the check at once: each computes the report unlocked, then
locks the versions of the experiment's kinds and re-reads them; only one still finds
the same challenger serving the same experiment and stops it, the other finds
nothing left to do. Running it again changes nothing either.

The check looks again every few minutes, which inflates the chance of stopping a
challenger that is not worse (every look is a new chance of a false alarm): the
defaults (alpha 0.01, 1,000 impressions per arm) keep that modest, and a false stop
only ends a test early (an ML engineer can restart it), where a missed one keeps
serving a worse model to a share of members.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import F, Q

from recommender.ml.abtest import Interval, ProportionTest
from recommender.selectors import ArmReport, ab_report
from registry.models import ActivationAction, MLModel, ModelActivation
from registry.services import model_set_traffic

logger = logging.getLogger(__name__)

GUARDRAIL_ACTOR_LABEL = "ab-guardrail"
DEFAULT_ALPHA = 0.01
DEFAULT_MIN_IMPRESSIONS = 1000
# (report attribute of the test, of the rate, of the interval, counted events)
METRICS = {
    "like rate": ("like_test", "like_rate", "like_interval", "likes"),
    "match rate": ("match_test", "match_rate", "match_interval", "matches"),
}


@dataclass(frozen=True)
class Experiment:
    """The A/B experiment serving now: its ``name`` as serving labels impressions
    (``ranking-v5-vs-v4``; kinds joined by ``+`` when several have a challenger),
    the challenger versions, and when the latest of them started (``None`` when the
    activation log does not say)."""

    name: str
    challengers: tuple[MLModel, ...]
    started_at: dt.datetime | None


@dataclass(frozen=True)
class GuardrailResult:
    """What one check found: the arms compared, the metrics on which the challenger
    is significantly worse (``breaches``, empty when it stays), the activation rows
    of the versions it stopped, and ``summary``, one line saying why."""

    experiment: Experiment
    control: ArmReport | None
    challenger: ArmReport | None
    breaches: list[str] = field(default_factory=list)
    activations: list[ModelActivation] = field(default_factory=list)
    summary: str = ""


def experiment_get_current() -> Experiment | None:
    """The experiment serving now, or ``None`` when no version has A/B traffic.

    Named by ``recommender.serving.experiment_name``, as serving labels the
    impressions of a member's arm, so its impressions are found by name.
    """
    serving_versions = MLModel.objects.filter(
        Q(is_active=True) | Q(traffic_percent__gt=0)
    )
    return _experiment_of(list(serving_versions))


def experiment_guardrail_check(
    *, alpha: float | None = None, min_impressions: int | None = None
) -> GuardrailResult | None:
    """Test the serving experiment's challenger against control and stop it when it
    is significantly worse on a guardrail metric (see the module). ``alpha`` and
    ``min_impressions`` default to the settings. Returns ``None`` when no
    experiment runs.
    """
    alpha, min_impressions = _thresholds(alpha=alpha, min_impressions=min_impressions)
    experiment = experiment_get_current()
    if experiment is None:
        return None
    arms = {
        report.arm: report
        for report in ab_report(experiment=experiment.name, since=experiment.started_at)
    }
    control, challenger = arms.get("control"), arms.get("challenger")
    result = GuardrailResult(
        experiment=experiment, control=control, challenger=challenger
    )
    smallest = min(
        control.impressions if control else 0,
        challenger.impressions if challenger else 0,
    )
    if smallest < min_impressions:
        return replace(
            result,
            summary=f"{experiment.name}: not judged yet, {smallest} impressions in "
            f"the smaller arm (the guardrail needs {min_impressions} per arm)",
        )
    breaches = [
        name
        for name, (test_name, *_) in METRICS.items()
        if (test := getattr(challenger, test_name)) is not None
        and test.significantly_lower(alpha=alpha)
    ]
    if not breaches:
        return replace(
            result,
            summary=f"{experiment.name}: the challenger is not significantly worse "
            f"than control at alpha {alpha:g}",
        )
    reason = _stop_reason(
        experiment=experiment,
        control=control,
        challenger=challenger,
        breaches=breaches,
        alpha=alpha,
    )
    activations = _challengers_stop(experiment=experiment, reason=reason)
    if activations:
        logger.warning("A/B guardrail stopped a challenger: %s", reason)
    else:
        reason = f"{experiment.name}: already stopped or changed meanwhile"
    return replace(result, breaches=breaches, activations=activations, summary=reason)


@transaction.atomic
def _challengers_stop(*, experiment: Experiment, reason: str) -> list[ModelActivation]:
    """Set every challenger of ``experiment`` to 0 % traffic, if the experiment
    still serves as it was judged; [] when another worker (or an admin) changed it
    first.

    Locks all versions of the experiment's kinds in primary-key order: the order
    ``registry.services`` locks a kind's versions in, so the two cannot deadlock.
    """
    kinds = sorted({model.kind for model in experiment.challengers})
    locked = list(
        MLModel.objects.select_for_update().filter(kind__in=kinds).order_by("pk")
    )
    now = _experiment_of(
        [model for model in locked if model.is_active or model.traffic_percent > 0]
    )
    judged = {model.pk for model in experiment.challengers}
    if now is None or now.name != experiment.name:
        return []
    if {model.pk for model in now.challengers} != judged:
        return []
    return [
        model_set_traffic(
            model=model.pk,
            traffic_percent=0,
            actor=None,
            actor_label=GUARDRAIL_ACTOR_LABEL,
            reason=reason,
        )
        for model in now.challengers
    ]


def _experiment_of(serving_versions: list[MLModel]) -> Experiment | None:
    # Imported here: the serving package brings FAISS and scikit-learn, and this
    # module is imported by the admin, so at every process's start.
    from recommender.serving import experiment_name

    active = {model.kind: model for model in serving_versions if model.is_active}
    challengers = {
        model.kind: model
        for model in serving_versions
        if not model.is_active and model.traffic_percent > 0
    }
    if not challengers:
        return None
    ordered = tuple(challengers[kind] for kind in sorted(challengers))
    return Experiment(
        name=experiment_name(challengers=challengers, active=active),
        challengers=ordered,
        started_at=_started_at(ordered),
    )


def _started_at(challengers: tuple[MLModel, ...]) -> dt.datetime | None:
    """When the latest of ``challengers`` became its kind's challenger: its newest
    "challenger" activation that did not come from itself (a change of its share
    keeps the test running; a stop and a restart begin a new one)."""
    starts = (
        ModelActivation.objects.filter(
            action=ActivationAction.CHALLENGER,
            to_model__in=[model.pk for model in challengers],
        )
        .exclude(from_model=F("to_model"))
        .order_by("-created_at", "-id")
        .values_list("created_at", flat=True)
    )
    return starts.first()


def guardrail_thresholds() -> dict[str, float | int]:
    """The configured ``alpha`` and ``min_impressions`` of the guardrail."""
    alpha, min_impressions = _thresholds(alpha=None, min_impressions=None)
    return {"alpha": alpha, "min_impressions": min_impressions}


def _thresholds(*, alpha: float | None, min_impressions: int | None):
    kindred = getattr(settings, "KINDRED", {})
    if alpha is None:
        alpha = kindred.get("AB_GUARDRAIL_ALPHA", DEFAULT_ALPHA)
    if min_impressions is None:
        min_impressions = kindred.get(
            "AB_GUARDRAIL_MIN_IMPRESSIONS", DEFAULT_MIN_IMPRESSIONS
        )
    if not 0 < alpha < 1:
        raise ImproperlyConfigured(f"AB_GUARDRAIL_ALPHA must be in (0, 1): {alpha}")
    if min_impressions < 1:
        raise ImproperlyConfigured(
            f"AB_GUARDRAIL_MIN_IMPRESSIONS must be at least 1: {min_impressions}"
        )
    return alpha, min_impressions


def _stop_reason(
    *,
    experiment: Experiment,
    control: ArmReport,
    challenger: ArmReport,
    breaches: list[str],
    alpha: float,
) -> str:
    since = (
        f"since {experiment.started_at:%Y-%m-%d %H:%M} UTC"
        if experiment.started_at
        else "all time"
    )
    lines = [
        f"A/B guardrail: the challenger of {experiment.name} is significantly worse "
        f"than control on {' and '.join(breaches)} (alpha {alpha:g}, impressions "
        f"{since}; challenger {challenger.impressions}, control "
        f"{control.impressions})."
    ]
    for name, (test_name, rate_name, interval_name, events_name) in METRICS.items():
        test: ProportionTest | None = getattr(challenger, test_name)
        lines.append(
            f"{name}: challenger {_figures(challenger, rate_name, interval_name)} "
            f"({getattr(challenger, events_name)}), control "
            f"{_figures(control, rate_name, interval_name)} "
            f"({getattr(control, events_name)}); "
            + (
                f"{'z-test' if test.method == 'z' else 'Fisher exact'} "
                f"p = {test.p_value_text}"
                if test is not None
                else "no test"
            )
            + (" — worse" if name in breaches else "")
        )
    return "\n".join(lines)


def _figures(report: ArmReport, rate_name: str, interval_name: str) -> str:
    rate: float = getattr(report, rate_name)
    interval: Interval | None = getattr(report, interval_name)
    return f"{rate:.4f} (95% CI {interval.text})"
