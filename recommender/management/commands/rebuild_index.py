"""``manage.py rebuild_index``: rebuild the active embedding version's FAISS index."""

import time

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from config.api import ApplicationError
from recommender.services.indexes import index_rebuild


class Command(BaseCommand):
    help = (
        "Rebuild the FAISS index of the active embedding model from its stored "
        "embeddings, first embedding members who joined since training from their "
        "profile (content fallback), and register it; serving picks it up."
    )

    def handle(self, *args, **options):
        started = time.monotonic()

        def progress(message: str) -> None:
            self.stdout.write(f"[{time.monotonic() - started:7.1f}s] {message}")
            self.stdout.flush()

        try:
            result = index_rebuild(progress=progress)
        except ApplicationError as error:
            raise CommandError(error.message) from error
        index = result.index
        if result.superseded:
            self.stdout.write(
                self.style.WARNING(
                    f"Another rebuild of embedding v{result.embedding_version}, "
                    f"from later data, registered index {index.pk} meanwhile: this "
                    "one was discarded and that one serves."
                )
            )
            return
        recall = ", ".join(f"{k} {v}" for k, v in index.metrics.items())
        self.stdout.write(
            self.style.SUCCESS(
                f"Rebuilt the index of embedding v{result.embedding_version}: "
                f"{index.index_type}, {index.n_vectors:,} vectors x {index.dim} dims "
                f"({result.stored_vectors:,} stored + {result.new_members:,} new "
                f"members), {filesizeformat(index.artifact_size)}, built in "
                f"{index.build_seconds:.2f}s ({result.seconds:.1f}s in all), {recall}."
            )
        )
