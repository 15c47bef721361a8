"""Celery app for the kill tests: the function named by ``KINDRED_TEST_HANG_AFTER``
("module:function", e.g. ``recommender.data:user_embeddings_write``) does its work,
then hangs INSIDE its caller's registration transaction (rows written, not
committed), after writing the marker file ``KINDRED_TEST_HANG_MARKER``, so the test
can SIGKILL the worker at the worst moment."""

import importlib
import os
import time
from pathlib import Path

import django

django.setup()

from config.celery import app  # noqa: E402

__all__ = ["app"]


def _hang_after(module_name: str, function_name: str) -> None:
    module = importlib.import_module(module_name)
    original = getattr(module, function_name)

    def then_hang(**kwargs):
        result = original(**kwargs)
        Path(os.environ["KINDRED_TEST_HANG_MARKER"]).write_text("registering")
        time.sleep(3600)
        return result

    setattr(module, function_name, then_hang)


_hang_after(*os.environ["KINDRED_TEST_HANG_AFTER"].split(":"))
