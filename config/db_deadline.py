"""A client-side deadline for the database calls of web requests.

PostgreSQL's ``statement_timeout`` (set for web processes, see settings) cancels a
slow statement, and psycopg's ``connect_timeout`` gives up on a server that never
completes a connection. Neither helps when the server stops answering on a
connection already open (a hung or frozen server, a dead network path whose far
end still acknowledges): psycopg waits on the socket forever, the request's thread
with it, and once every thread of every worker is stuck even ``/health/live`` gets
no answer.

:class:`DatabaseDeadlineMiddleware` (WSGI) registers each request's database
connection while the request runs; one watchdog thread per process looks at them
every ``TICK`` seconds, and a connection that stays busy on the same call (psycopg's
transaction status ``ACTIVE``: a command sent, its answer awaited) for longer than
the deadline has its socket shut down. psycopg then raises ``OperationalError`` in
the request, which the API answers as a 503 (``config.api.exception_handler``) and
the health checks report. The deadline is the statement timeout plus a second, so a
server that is merely slow cancels the statement itself first.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from django.db import DEFAULT_DB_ALIAS, connections

from config.db_routers import REPLICA

logger = logging.getLogger(__name__)

TICK = 0.25  # seconds between two looks at the connections

_lock = threading.Lock()
_watched: set[_Watched] = set()
_watchdog: threading.Thread | None = None


class _Watched:
    """One request's database connection, and how long it has been busy."""

    def __init__(self, wrapper, deadline: float):
        self.wrapper = wrapper  # Django's DatabaseWrapper of the request's thread
        self.deadline = deadline
        self.calls = 0  # executes so far: a new one restarts the clock
        self.busy_key: tuple | None = None
        self.busy_since = 0.0

    def count(self, execute, sql, params, many, context):
        self.calls += 1
        return execute(sql, params, many, context)

    def overdue(self, now: float) -> bool:
        raw = self.wrapper.connection
        try:
            busy = raw is not None and not raw.closed and _is_active(raw)
        except Exception:  # noqa: BLE001 - a connection being closed meanwhile
            busy = False
        if not busy:
            self.busy_key = None
            return False
        key = (id(raw), self.calls)
        if key != self.busy_key:
            self.busy_key, self.busy_since = key, now
            return False
        return now - self.busy_since > self.deadline

    def cut(self) -> None:
        raw = self.wrapper.connection
        if raw is None or raw.closed:
            return
        # shutdown() acts on the socket itself, through a duplicate of its fd: the
        # psycopg call waiting on it wakes up and fails.
        with socket.socket(fileno=os.dup(raw.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)


def _is_active(raw) -> bool:
    from psycopg.pq import TransactionStatus

    return raw.info.transaction_status == TransactionStatus.ACTIVE


def _watch() -> None:
    while True:
        time.sleep(TICK)
        now = time.monotonic()
        with _lock:
            for watched in list(_watched):
                if watched.overdue(now):
                    logger.error(
                        "database call unanswered for %.1fs: connection cut",
                        now - watched.busy_since,
                    )
                    try:
                        watched.cut()
                    except OSError:
                        pass
                    watched.busy_key = None


def _ensure_watchdog() -> None:
    global _watchdog
    with _lock:
        if _watchdog is None or not _watchdog.is_alive():
            _watchdog = threading.Thread(
                target=_watch, name="kindred-db-deadline", daemon=True
            )
            _watchdog.start()


class DatabaseDeadlineMiddleware:
    """WSGI middleware: the request's database calls get ``deadline`` seconds each
    (0: no deadline; only on PostgreSQL), on the primary and on the read replica
    when there is one (a replica's cut connection sends the read to the primary:
    ``config.db_routers``)."""

    def __init__(self, app, *, deadline: float):
        self.app = app
        self.deadline = deadline
        self.enabled = deadline > 0 and connections["default"].vendor == "postgresql"
        self.aliases = [
            alias for alias in (DEFAULT_DB_ALIAS, REPLICA) if alias in connections
        ]

    def __call__(self, environ, start_response):
        if not self.enabled:
            return self.app(environ, start_response)
        _ensure_watchdog()
        pairs = []
        for alias in self.aliases:
            wrapper = connections[alias]
            watched = _Watched(wrapper, self.deadline)
            wrapper.execute_wrappers.append(watched.count)
            pairs.append((wrapper, watched))
        with _lock:
            _watched.update(watched for _, watched in pairs)

        def done():
            with _lock:
                _watched.difference_update(watched for _, watched in pairs)
            for wrapper, watched in pairs:
                if watched.count in wrapper.execute_wrappers:
                    wrapper.execute_wrappers.remove(watched.count)

        try:
            result = self.app(environ, start_response)
        except BaseException:
            done()
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if file_wrapper is not None and isinstance(result, file_wrapper):
            done()  # a file sent as is (sendfile): its database work is over
            return result
        return _ClosingIterable(result, done)


class _ClosingIterable:
    """The response, unchanged; ``done`` runs when the server closes it (Django's
    end-of-request connection handling runs in the same ``close()``)."""

    def __init__(self, result, done):
        self.result = result
        self.done = done

    def __iter__(self):
        return iter(self.result)

    def close(self):
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            self.done()
