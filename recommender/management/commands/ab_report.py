from django.core.management.base import BaseCommand, CommandError

from recommender.ml.abtest import Interval, ProportionTest
from recommender.selectors import ArmReport, ab_report, ab_report_since
from registry.models import ModelKind


def _positive_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise CommandError(f"--since: {value!r} is not a number of days") from None
    if days < 1:
        raise CommandError("--since: must be at least 1 day")
    return days


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _interval(interval: Interval | None) -> str:
    return "—" if interval is None else interval.text


def _p_value(test: ProportionTest | None) -> str:
    return "—" if test is None else test.p_value_text


def _methods(row: ArmReport) -> str:
    if row.like_test is None or row.match_test is None:
        return "—"
    return f"{row.like_test.method}/{row.match_test.method}"


class Command(BaseCommand):
    help = (
        "A/B report: per experiment arm, impressions, likes and matches with the like "
        "and match rate per impression, their 95% Wilson intervals and, for a "
        "challenger arm, the two-sided p-value of its difference from control "
        "(test: z = two-proportion z-test, fisher = Fisher exact; like/match)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--kind",
            choices=ModelKind.values,
            help="Only experiments about this model kind.",
        )
        parser.add_argument(
            "--since",
            type=_positive_days,
            metavar="DAYS",
            help="Only impressions of the last DAYS days (default: all time).",
        )

    def handle(self, *args, kind=None, since=None, **options):
        rows = ab_report(kind=kind, since=ab_report_since(days=since))
        if not rows:
            self.stdout.write("No impressions served inside an experiment.")
            return
        header = (
            "experiment",
            "arm",
            "impressions",
            "likes",
            "like_rate",
            "like_95ci",
            "like_p",
            "matches",
            "match_rate",
            "match_95ci",
            "match_p",
            "test",
        )
        table = [header] + [
            (
                row.experiment,
                row.arm or "—",
                str(row.impressions),
                str(row.likes),
                _rate(row.like_rate),
                _interval(row.like_interval),
                _p_value(row.like_test),
                str(row.matches),
                _rate(row.match_rate),
                _interval(row.match_interval),
                _p_value(row.match_test),
                _methods(row),
            )
            for row in rows
        ]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        for line in table:
            cells = [
                cell.ljust(width) if i < 2 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            ]
            self.stdout.write("  ".join(cells).rstrip())
