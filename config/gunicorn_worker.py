"""gunicorn's threaded worker, recycled when a request is stuck.

The stock ``gthread`` worker tells the arbiter it is alive from its event loop,
which keeps turning while its threads hang: gunicorn's ``timeout`` never fires
for a stuck request, and a worker whose threads are all stuck stops accepting
connections for good. This worker stops its heartbeat once a request has run
longer than ``timeout``: the arbiter then kills it (``WORKER TIMEOUT``) and starts
a fresh one. The database deadline (``config.db_deadline``) normally ends a
request long before; this is the last resort for anything else that hangs.
"""

import threading
import time

from gunicorn.workers.gthread import ThreadWorker


class RecyclingThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._started: dict[int, float] = {}  # thread id -> request start
        self._stuck_logged = False

    def handle_request(self, req, conn):
        ident = threading.get_ident()
        self._started[ident] = time.monotonic()
        try:
            return super().handle_request(req, conn)
        finally:
            self._started.pop(ident, None)

    def notify(self):
        oldest = min(self._started.values(), default=None)
        if oldest is not None and time.monotonic() - oldest > self.timeout:
            if not self._stuck_logged:
                self._stuck_logged = True
                self.log.error(
                    "a request has run for over %ss: worker %s stops its "
                    "heartbeat and will be replaced",
                    self.timeout,
                    self.pid,
                )
            return
        super().notify()
