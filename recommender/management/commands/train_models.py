"""``manage.py train_models``: the nightly pipeline, synchronously, with progress."""

import time

from django.core.management.base import BaseCommand, CommandError

from config.api import ApplicationError
from recommender.services.pipeline import STAGES, pipeline_run
from registry.models import MLModel, ModelKind
from registry.selectors import model_get_active

HEADLINE_METRICS = ("auc", "log_loss", "precision@10", "recall@10", "ndcg@10")


class Command(BaseCommand):
    help = (
        "Run the training pipeline now (features, embeddings, FAISS index, ranking, "
        "evaluation, then a rebuild of the serving embedding version's index with "
        "the members who joined since), as the nightly Celery chain does, and "
        "print a summary."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--if-untrained",
            action="store_true",
            help="Do nothing when an embedding and a ranking version are already "
            "active (the quick start uses it so a re-run does not retrain).",
        )

    def handle(self, *args, if_untrained: bool = False, **options):
        if if_untrained:
            active = [model_get_active(kind=kind) for kind in ModelKind.values]
            if all(active):
                versions = ", ".join(f"{m.kind} v{m.version}" for m in active)
                self.stdout.write(f"Already trained ({versions} active); skipping.")
                return
        started = time.monotonic()

        def progress(message: str) -> None:
            self.stdout.write(f"[{time.monotonic() - started:7.1f}s] {message}")
            self.stdout.flush()

        try:
            run = pipeline_run(trigger="cli", progress=progress)
        except ApplicationError as error:
            raise CommandError(error.message) from error
        self._summary(run)

    def _summary(self, run) -> None:
        write = self.stdout.write
        write(self.style.SUCCESS(f"\nTraining run {run.pk} {run.status}."))
        stages = run.summary.get("stages") or {}
        for stage in STAGES:
            if stage in stages:
                write(f"  {stage:<13} {stages[stage].get('seconds', 0):8.1f}s")
        write(f"  {'total':<13} {run.summary.get('total_seconds', 0):8.1f}s")
        for model in MLModel.objects.filter(
            pk__in=[run.embedding_model_id, run.ranking_model_id]
        ).order_by("kind"):
            write(
                f"\nRegistered {model.kind} v{model.version} (inactive unless "
                f"promoted): {model.artifact_size:,} bytes"
            )
            metrics = model.metrics or {}
            if model.kind == "ranking":
                write("  holdout " + _metrics_line(metrics))
                for baseline in ("baseline_popularity", "baseline_random"):
                    if isinstance(metrics.get(baseline), dict):
                        write(f"  {baseline:<19} " + _metrics_line(metrics[baseline]))
                for key in ("model_type", "train_rows", "holdout_rows"):
                    if key in metrics:
                        write(f"  {key}: {metrics[key]}")
            else:
                write(
                    f"  members {model.data_counts.get('members', 0):,}, "
                    f"learned taste share {metrics.get('learned_taste_share')}"
                )
        if run.index_artifact_id:
            index = run.index_artifact
            write(
                f"\nIndex {index.index_type} over {index.n_vectors:,} x {index.dim} "
                f"vectors, built in {index.build_seconds:.1f}s, "
                + ", ".join(f"{k} {v}" for k, v in index.metrics.items())
            )
        for decision in run.summary.get("promotions") or []:
            verdict = "promoted" if decision.get("promoted") else "not promoted"
            label = (
                f"{decision['kind']} v{decision['version']} "
                if "kind" in decision
                else ""
            )
            write(f"{label}{verdict}: {decision.get('reason', '')}")
        refresh = stages.get("serving_index") or {}
        if "skipped" in refresh:
            write(f"Serving index not rebuilt: {refresh['skipped']}.")
        elif refresh:
            write(
                f"Serving index of embedding v{refresh['version']} rebuilt: index "
                f"{refresh['index']}, {refresh['n']:,} vectors "
                f"({refresh['new_members']:,} new members)"
                + (
                    ", superseded by a rebuild from later data"
                    if refresh.get("superseded")
                    else ""
                )
                + "."
            )


def _metrics_line(metrics: dict) -> str:
    parts = []
    for key in HEADLINE_METRICS:
        value = metrics.get(key)
        if isinstance(value, int | float):
            parts.append(f"{key} {value:.4f}")
    return ", ".join(parts) or "—"
