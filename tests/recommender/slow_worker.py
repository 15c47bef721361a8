"""Celery app for the kill test: the embeddings stage hangs INSIDE its registration
transaction (version row and vectors written, not committed), after writing a marker
file, so the test can SIGKILL the worker at the worst moment."""

import os
import time
from pathlib import Path

import django

django.setup()

from config.celery import app  # noqa: E402
from recommender import data  # noqa: E402

__all__ = ["app"]
_write_embeddings = data.user_embeddings_write


def _write_then_hang(**kwargs):
    count = _write_embeddings(**kwargs)
    Path(os.environ["KINDRED_TEST_HANG_MARKER"]).write_text("registering")
    time.sleep(3600)
    return count


data.user_embeddings_write = _write_then_hang
