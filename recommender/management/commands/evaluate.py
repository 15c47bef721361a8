"""``manage.py evaluate``: the offline strategy comparison, printed and written as
JSON, Markdown and a PNG chart."""

import time

from django.core.management.base import BaseCommand, CommandError

from recommender.evaluation import default_out_dir, evaluation_run, text_tables
from recommender.ml.evaluation_fit import EvaluationConfig


class Command(BaseCommand):
    help = (
        "Compare the served two-stage pipeline with baselines (random, popularity, "
        "'liked you, then popularity', content-only, collaborative-only) and "
        "textbook peers (ALS, EASE, item-kNN, user-kNN, each also reciprocal; tuned "
        "on a validation slice of the training period) on a time split of the "
        "interactions (train on the past, test on the future): AUC, precision@k, "
        "recall@k, NDCG@k and the mutual-like share, ranked among everyone each "
        "strategy may recommend and among the pairs rated in the test period; "
        "candidate recall per source; exposure concentration. "
        "Writes report.json, report.md and report.png to --out (default: "
        "MEDIA_ROOT/evaluation/<label>-<time>)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--namespace",
            help="Only members named <namespace>_… (one imported data set: sd, otc, "
            "demo); default: every member.",
        )
        parser.add_argument("--out", help="Output directory.")
        parser.add_argument("--title", help="Report title.")
        parser.add_argument("--k", type=int, default=10)
        parser.add_argument("--holdout-fraction", type=float, default=0.15)
        parser.add_argument("--label-fraction", type=float, default=0.15)
        parser.add_argument(
            "--max-viewers",
            type=int,
            default=1_000,
            help="Test viewers ranked among everyone (a seeded sample beyond it).",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--dim", type=int, default=None, help="Embedding dims.")
        parser.add_argument("--threads", type=int, default=1)

    def handle(self, *args, **options):
        started = time.monotonic()

        def progress(message: str) -> None:
            self.stdout.write(f"[{time.monotonic() - started:6.1f}s] {message}")
            self.stdout.flush()

        if options["k"] < 1 or options["max_viewers"] < 1:
            raise CommandError("--k and --max-viewers must be at least 1.")
        embedding = {"dim": options["dim"]} if options["dim"] else {}
        config = EvaluationConfig(
            k=options["k"],
            holdout_fraction=options["holdout_fraction"],
            label_fraction=options["label_fraction"],
            seed=options["seed"],
            max_viewers=options["max_viewers"],
            embedding_kwargs=embedding,
            threads=options["threads"],
        )
        label = options["namespace"] or "all"
        out_dir = options["out"] or default_out_dir(label=label)
        progress("loading members and interactions")
        try:
            output = evaluation_run(
                namespace=options["namespace"],
                config=config,
                out_dir=out_dir,
                title=options["title"],
                progress=progress,
            )
        except ValueError as error:
            raise CommandError(f"Cannot evaluate: {error}") from None
        report = output.report
        counts = report["counts"]
        self.stdout.write("")
        self.stdout.write(
            f"{output.title}: {counts['members']:,} members, "
            f"{counts['interactions']:,} interactions, test period "
            f"{counts['test_interactions']:,} ({counts['test_likes']:,} likes), "
            f"{counts['viewers_ranked_among_everyone']:,} viewers ranked among "
            "everyone"
        )
        for line in text_tables(report):
            self.stdout.write(line)
        self.stdout.write(
            self.style.SUCCESS(
                f"wrote report.json, report.md, report.png to {output.directory}"
            )
        )
