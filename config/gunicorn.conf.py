"""gunicorn settings, overridable from the environment.

No ``preload_app``: each worker imports Django and loads models after the fork
(FAISS/OpenMP state must not cross a fork), and OpenMP gets one thread per worker.

Prometheus: the workers share a fresh ``PROMETHEUS_MULTIPROC_DIR`` (a new temporary
directory, or the given one emptied at start) so ``/metrics`` sums every worker;
a worker's live gauges are dropped when it exits. Logs: gunicorn's own lines use
the same structured format as Django's (``config/logging_setup.py``).
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

# gunicorn loads this file by path; the project root makes ``config`` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.gunicorn_errors import install as install_json_errors  # noqa: E402
from config.logging_setup import logging_config  # noqa: E402

# gunicorn's own 400/414/431 answers in the API's JSON error shape, not HTML.
install_json_errors()

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# gthread, except that a request running longer than `timeout` gets its worker
# replaced (the stock gthread worker is never timed out while its threads hang).
worker_class = "config.gunicorn_worker.RecyclingThreadWorker"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = 100
preload_app = False
# Peers allowed to say "this was https" (X-Forwarded-Proto) and set other forwarded
# headers: nobody when clients connect directly (NUM_PROXIES=0, the default), else
# the proxies' addresses (FORWARDED_ALLOW_IPS, comma-separated IPs or networks).
_behind_proxies = int(os.environ.get("NUM_PROXIES", "") or 0) > 0
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS") or (
    "127.0.0.1,::1" if _behind_proxies else ""
)
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG", "") else None
errorlog = "-"

_debug = os.environ.get("DJANGO_DEBUG", "").lower() in ("1", "true", "yes", "on")
logconfig_dict = logging_config(
    debug=(os.environ.get("LOG_FORMAT") or ("console" if _debug else "json"))
    == "console",
    level=os.environ.get("LOG_LEVEL", "INFO"),
)
# Django's own "request" line (config.middleware) is the access log; gunicorn's
# is kept only when asked for.
logconfig_dict["loggers"]["gunicorn.access"]["level"] = (
    "INFO" if accesslog else "WARNING"
)

# Set before any worker imports prometheus_client (workers fork from this process).
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix="kindred-prometheus-"
    )


def on_starting(server):
    """Empty a given metrics directory of a previous run's values."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server, worker):
    """Drop the exited worker's live gauges (its counters keep counting)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
