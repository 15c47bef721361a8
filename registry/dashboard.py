"""What the admin's registry dashboard shows, assembled from the registry selectors.

Per model kind: the active version and the challenger, every version's metrics side
by side, and line charts of the key metrics over versions drawn as plain SVG
geometry here (the template only places the numbers: no JavaScript, no CDN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from registry.models import MLModel, ModelActivation, ModelKind
from registry.selectors import (
    activation_list,
    index_get_latest,
    model_get_active,
    model_get_challenger,
    model_list,
)

# Charted first when present, in this order; other numeric metrics follow.
KEY_METRICS = ("auc", "ndcg@10", "recall@100", "log_loss", "precision@10")
# Bookkeeping rather than quality: shown in the table, never charted.
NOT_CHARTED = ("training_seconds", "groups", "rows", "train_rows", "holdout_rows")
MAX_CHARTS = 4
MAX_VERSIONS = 30
ACTIVATIONS_SHOWN = 25

CHART_WIDTH, CHART_HEIGHT = 360, 160
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 12, 28


@dataclass
class ChartPoint:
    x: float
    y: float
    version: int
    value: float
    active: bool


@dataclass
class Chart:
    """A line chart of one metric over versions (SVG user units)."""

    metric: str
    points: list[ChartPoint]
    polyline: str
    y_min: float
    y_max: float
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    left: int = PAD_LEFT
    right: int = CHART_WIDTH - PAD_RIGHT
    top: int = PAD_TOP
    bottom: int = CHART_HEIGHT - PAD_BOTTOM


@dataclass
class VersionRow:
    model: MLModel
    values: list[str]  # one per KindSection.metric_names
    index_vectors: int | None = None


@dataclass
class KindSection:
    kind: str
    label: str
    active: MLModel | None
    challenger: MLModel | None
    metric_names: list[str]
    rows: list[VersionRow]
    charts: list[Chart] = field(default_factory=list)
    activations: list[ModelActivation] = field(default_factory=list)


def _numeric(value) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _metric_names(models: list[MLModel]) -> list[str]:
    present = {
        key
        for model in models
        if isinstance(model.metrics, dict)
        for key, value in model.metrics.items()
        if _numeric(value)
    }
    first = [key for key in KEY_METRICS if key in present]
    return first + sorted(present - set(first))


def _format(value) -> str:
    if _numeric(value):
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    return "—" if value is None else str(value)


def chart_build(*, metric: str, models: list[MLModel]) -> Chart | None:
    """The chart of ``metric`` over ``models`` (oldest version on the left), or
    ``None`` when fewer than one version has a value."""
    series = [
        (model, float(model.metrics[metric]))
        for model in sorted(models, key=lambda model: model.version)
        if isinstance(model.metrics, dict) and _numeric(model.metrics.get(metric))
    ]
    if not series:
        return None
    values = [value for _, value in series]
    low, high = min(values), max(values)
    if math.isclose(low, high):
        pad = abs(low) * 0.05 or 0.5  # a flat line drawn mid-height
        low, high = low - pad, high + pad
    span_x = PAD_LEFT, CHART_WIDTH - PAD_RIGHT
    span_y = CHART_HEIGHT - PAD_BOTTOM, PAD_TOP
    step = (span_x[1] - span_x[0]) / max(len(series) - 1, 1)
    points = []
    for i, (model, value) in enumerate(series):
        x = span_x[0] + step * i if len(series) > 1 else (span_x[0] + span_x[1]) / 2
        y = span_y[0] + (value - low) / (high - low) * (span_y[1] - span_y[0])
        points.append(
            ChartPoint(
                x=round(x, 1),
                y=round(y, 1),
                version=model.version,
                value=value,
                active=model.is_active,
            )
        )
    return Chart(
        metric=metric,
        points=points,
        polyline=" ".join(f"{p.x},{p.y}" for p in points),
        y_min=low,
        y_max=high,
    )


def registry_dashboard() -> list[KindSection]:
    """One section per model kind, newest versions first (at most
    ``MAX_VERSIONS``), with charts of up to ``MAX_CHARTS`` metrics."""
    sections = []
    for kind, label in ModelKind.choices:
        models = list(model_list(kind=kind)[:MAX_VERSIONS])
        names = _metric_names(models)
        rows = []
        for model in models:
            row = VersionRow(
                model=model,
                values=[_format((model.metrics or {}).get(name)) for name in names],
            )
            if kind == ModelKind.EMBEDDING:
                index = index_get_latest(embedding_model=model)
                row.index_vectors = index.n_vectors if index is not None else None
            rows.append(row)
        charted = [name for name in names if name not in NOT_CHARTED][:MAX_CHARTS]
        charts = [chart_build(metric=name, models=models) for name in charted]
        sections.append(
            KindSection(
                kind=kind,
                label=label,
                active=model_get_active(kind=kind),
                challenger=model_get_challenger(kind=kind),
                metric_names=names,
                rows=rows,
                charts=[chart for chart in charts if chart is not None],
                activations=list(activation_list(kind=kind)[:ACTIVATIONS_SHOWN]),
            )
        )
    return sections
