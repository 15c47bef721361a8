"""gunicorn settings, overridable from the environment.

No ``preload_app``: each worker imports Django and loads models after the fork
(FAISS/OpenMP state must not cross a fork), and OpenMP gets one thread per worker.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = 100
preload_app = False
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG", "") else None
errorlog = "-"
