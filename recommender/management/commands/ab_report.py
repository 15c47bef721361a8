from django.core.management.base import BaseCommand, CommandError

from recommender.selectors import ab_report, ab_report_since
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


class Command(BaseCommand):
    help = (
        "A/B report: per experiment arm, impressions, likes and matches with the like "
        "and match rate per impression."
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
            "matches",
            "match_rate",
        )
        table = [header] + [
            (
                row.experiment,
                row.arm or "—",
                str(row.impressions),
                str(row.likes),
                _rate(row.like_rate),
                str(row.matches),
                _rate(row.match_rate),
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
