"""Django side of the offline evaluation: load members and interactions from the
database, run ``recommender.ml.evaluation`` and write its report files.

Used by ``manage.py evaluate`` (trains a ranking model with the nightly recipe on the
data's time split) and by the nightly pipeline's evaluate stage (scores the ranking
version the run just registered, on the same split it was trained on).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.utils import timezone

from accounts.models import User
from recommender import data as db
from recommender.ml.data import InteractionArrays, MemberArrays
from recommender.ml.evaluation import (
    EvaluationConfig,
    EvaluationResult,
    strategies_evaluate,
)
from recommender.ml.evaluation_report import (
    ceiling_line,
    comparison_lines,
    recall_table,
    report_chart,
    report_markdown,
    report_table,
)
from recommender.ml.ranking import RankingModel

REPORT_FILES = ("report.json", "report.md", "report.png")


@dataclass
class EvaluationOutput:
    """The result and the files written (``None`` paths when nothing was written)."""

    result: EvaluationResult
    directory: Path | None
    title: str

    @property
    def report(self) -> dict:
        return self.result.report


def evaluation_data_load(
    *, namespace: str | None = None, before: dt.datetime | None = None
) -> tuple[MemberArrays, InteractionArrays]:
    """Members (optionally only those named ``<namespace>_…``, i.e. one imported or
    seeded data set) and the interactions between them (optionally created before
    ``before``), with the verdicts replaced by a change of mind (``until``): the
    evaluation's time split sees each pair's verdict as it stood at its cuts, as
    the training run's does."""
    user_ids = None
    if namespace:
        user_ids = list(
            User.objects.filter(username__startswith=f"{namespace}_").values_list(
                "pk", flat=True
            )
        )
    members = db.members_load(joined_before=before, user_ids=user_ids)
    interactions = db.interactions_load(created_before=before, with_history=True)
    if namespace:
        inside = np.isin(interactions.actor, members.user_id) & np.isin(
            interactions.target, members.user_id
        )
        interactions = interactions.select(inside)
    return members, interactions


def evaluation_run(
    *,
    namespace: str | None = None,
    config: EvaluationConfig | None = None,
    ranking_model: RankingModel | None = None,
    members: MemberArrays | None = None,
    interactions: InteractionArrays | None = None,
    out_dir: Path | str | None = None,
    title: str | None = None,
    progress=None,
) -> EvaluationOutput:
    """Evaluate every strategy (see ``recommender.ml.evaluation``) on the database's
    members and interactions (or the arrays given) and, with ``out_dir``, write
    ``report.json``, ``report.md`` and ``report.png`` there. Raises ValueError when
    the data cannot be evaluated (too few interactions or no held-out like)."""
    if members is None or interactions is None:
        members, interactions = evaluation_data_load(namespace=namespace)
    title = title or f"Kindred offline evaluation ({namespace or 'all members'})"
    result = strategies_evaluate(
        members,
        interactions,
        config=config,
        ranking_model=ranking_model,
        progress=progress,
    )
    result.report["title"] = title
    result.report["namespace"] = namespace
    result.report["generated_at"] = timezone.now().isoformat()
    directory = None
    if out_dir is not None:
        directory = Path(out_dir)
        evaluation_write(report=result.report, directory=directory, title=title)
    return EvaluationOutput(result=result, directory=directory, title=title)


def evaluation_write(*, report: dict, directory: Path, title: str) -> list[Path]:
    """Write the report's JSON, Markdown and PNG chart into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (directory / name for name in REPORT_FILES)
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    report_chart(report, png_path, title=title)
    md_path.write_text(report_markdown(report, title=title, chart=png_path.name))
    return [json_path, md_path, png_path]


def default_out_dir(*, label: str) -> Path:
    """``MEDIA_ROOT/evaluation/<label>-<UTC timestamp>`` (untracked)."""
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    return Path(settings.MEDIA_ROOT) / "evaluation" / f"{label}-{stamp}"


def text_tables(report: dict) -> list[str]:
    """Both protocols' tables, the candidate recall and the comparison of the
    served pipeline with the best other strategy, as aligned plain-text lines
    (what the command prints)."""
    lines = []
    for heading, table in (
        (
            "ranked among everyone the strategy may recommend",
            report_table(report, protocol="everyone"),
        ),
        (
            "ranked among the pairs rated in the test period",
            report_table(report, protocol="labelled"),
        ),
        ("candidate recall of the served sources", recall_table(report)),
    ):
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines.append(f"{heading}:")
        for row in table:
            lines.append(
                "  "
                + "  ".join(
                    cell.ljust(width) if i == 0 else cell.rjust(width)
                    for i, (cell, width) in enumerate(zip(row, widths, strict=True))
                )
            )
        lines.append("")
    lines += comparison_lines(report)
    lines.append(ceiling_line(report))
    return lines
