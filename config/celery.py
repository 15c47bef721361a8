"""The Celery application: configured from Django settings (``CELERY_*`` names).

Signals give every task run structured-log context (``task_id``, ``task_name`` on
each line it logs) and Prometheus figures (``celery_tasks_total{task,outcome}``,
``celery_task_duration_seconds{task}``, see ``config.metrics``). Celery keeps
Django's logging configuration instead of installing its own. A worker started with
``CELERY_METRICS_PORT`` (and its own ``PROMETHEUS_MULTIPROC_DIR``) serves its pool
processes' figures on that port.
"""

import os
import time

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# prometheus_client opens its value files there as soon as a metric is defined; a
# missing directory would crash every process started with the variable set.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

app = Celery("kindred")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_started: dict[str, tuple[float, dict]] = {}


@signals.setup_logging.connect
def _keep_django_logging(**kwargs):
    """Connected = Celery does not configure logging; Django's LOGGING stays."""
    from django.conf import settings

    from config.logging_setup import logging_reapply

    logging_reapply(settings.LOGGING)


@signals.task_prerun.connect
def _task_started(task_id=None, task=None, **kwargs):
    import structlog

    tokens = structlog.contextvars.bind_contextvars(
        task_id=task_id, task_name=getattr(task, "name", None)
    )
    _started[task_id] = (time.perf_counter(), tokens)


@signals.task_postrun.connect
def _task_finished(task_id=None, task=None, state=None, **kwargs):
    import structlog

    from config.metrics import celery_task_observe

    started, tokens = _started.pop(task_id, (None, None))
    if tokens is not None:
        structlog.contextvars.reset_contextvars(**tokens)
    celery_task_observe(
        task=getattr(task, "name", "unknown"),
        outcome=state or "UNKNOWN",
        seconds=None if started is None else time.perf_counter() - started,
    )


@signals.worker_init.connect
def _serve_worker_metrics(**kwargs):
    port = os.environ.get("CELERY_METRICS_PORT")
    if not port:
        return
    from prometheus_client import start_http_server

    from config.metrics import MULTIPROC_ENV, metrics_registry, multiproc_dir_reset

    if os.environ.get(MULTIPROC_ENV):
        multiproc_dir_reset(os.environ[MULTIPROC_ENV])
    start_http_server(int(port), registry=metrics_registry())


@signals.worker_process_shutdown.connect
def _pool_process_gone(pid=None, **kwargs):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
