"""``manage.py seed_demo --users N --seed S``: synthetic demo members, interactions."""

import time

from django.core.management.base import BaseCommand, CommandError

from accounts.demo import DemoSeedProgress, DemoSeedSummary, demo_seed
from config.cli import non_negative_int, positive_int
from config.progress import progress_line


class Command(BaseCommand):
    help = (
        "Create deterministic synthetic demo members (demo_00001, …) with a planted "
        "preference structure, their interactions and matches. Does nothing if demo "
        "members exist, unless --flush is given."
    )

    def add_arguments(self, parser):
        parser.add_argument("--users", type=positive_int, default=1_000)
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument(
            "--interactions-per-user", type=non_negative_int, default=20
        )
        parser.add_argument(
            "--flush",
            action="store_true",
            help="Delete the existing demo members (and what cascades) first.",
        )

    def handle(self, *args, **options):
        self._last_report = 0.0
        try:
            summary = demo_seed(
                users=options["users"],
                seed=options["seed"],
                interactions_per_user=options["interactions_per_user"],
                flush=options["flush"],
                progress=self._progress,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if summary.skipped:
            self.stdout.write(
                f"demo data present: {summary.members:,} members; "
                "use --flush to regenerate"
            )
            return
        self._write_summary(summary)

    def _progress(self, report: DemoSeedProgress) -> None:
        finished = report.done >= report.total
        now = time.monotonic()
        # At most a line a second, but always the first and last of each stage.
        if report.done and not finished and now - self._last_report < 1.0:
            return
        self._last_report = now
        self.stdout.write(
            progress_line(
                report.stage, report.done, report.total, report.stage_elapsed_seconds
            )
        )
        self.stdout.flush()

    def _write_summary(self, summary: DemoSeedSummary) -> None:
        kinds = ", ".join(
            f"{kind} {count:,}" for kind, count in summary.interactions_by_kind.items()
        )
        if summary.flushed_members:
            self.stdout.write(f"flushed {summary.flushed_members:,} demo members")
        self.stdout.write(
            self.style.SUCCESS(
                f"seeded {summary.members:,} demo members, "
                f"{summary.interactions:,} interactions ({kinds}), "
                f"{summary.matches:,} matches in {summary.elapsed_seconds:,.1f}s"
            )
        )
        self.stdout.write(
            "log in as demo_00001 … with the demo password: " + summary.password
        )
