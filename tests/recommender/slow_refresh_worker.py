"""Celery app for the serving-index kill test: the nightly refresh hangs INSIDE its
registration transaction (newcomers' vectors and the index row written, not
committed), after writing a marker file, so the test can SIGKILL the worker there."""

import os
import time
from pathlib import Path

import django

django.setup()

from config.celery import app  # noqa: E402
from recommender import services  # noqa: E402

__all__ = ["app"]
_index_register = services.index_register


def _register_then_hang(**kwargs):
    index = _index_register(**kwargs)
    Path(os.environ["KINDRED_TEST_HANG_MARKER"]).write_text("registering")
    time.sleep(3600)
    return index


services.index_register = _register_then_hang
