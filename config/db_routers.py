"""The optional read replica: which reads may go to it.

With ``DATABASE_REPLICA_URL`` set, settings add the ``replica`` database alias and
install :class:`ReplicaRouter`. A read goes to the replica only inside
:func:`replica_reads` (entered through :func:`replica_or_primary`), and only for
the member tables (the ``accounts`` and ``interactions`` apps). The recommendation
read path wraps in it the loads of the serving member store: every profile,
preference and interaction, the heaviest reads Kindred does (whole tables, on every
web worker at each store refresh and each promotion).

Everything else reads from the primary, whatever the scope: every write; the reads
that must see a write just made — the viewer's own profile, preferences and
interactions (a like recorded a moment ago must not come back in the next page),
the shortlist re-check and the random fallback (the last word on what is shown: a
member who hid their profile, blocked the viewer or deleted their account a moment
ago is never shown), the cache-hit re-check, tokens and sessions, the registry and
its generation (a promotion is picked up at the next poll); and training. A replica
lags the primary by a moment: the member store loaded from it misses a member who
joined that moment ago until its next refresh, like a store minutes old anyway.

A replica that fails (unreachable, its connection cut) costs one attempt: the read
runs again on the primary, and the replica is left alone for ``RETRY_SECONDS``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)

REPLICA = "replica"
# Apps whose tables the replica serves (inside replica_reads() only).
REPLICA_APPS = frozenset({"accounts", "interactions"})
RETRY_SECONDS = 30.0

T = TypeVar("T")

_reading = ContextVar("kindred_replica_reads", default=False)
_skip_until = 0.0  # time.monotonic() before which the replica is not tried
_last_error = ""


def replica_configured() -> bool:
    """Whether a read replica is configured (``DATABASE_REPLICA_URL``)."""
    return REPLICA in settings.DATABASES


def replica_available() -> bool:
    """Configured and not failed within the last ``RETRY_SECONDS``."""
    return replica_configured() and time.monotonic() >= _skip_until


@contextlib.contextmanager
def replica_reads() -> Iterator[None]:
    """Reads of member tables in this block (this thread or task) go to the
    replica, when one is configured and available."""
    token = _reading.set(True)
    try:
        yield
    finally:
        _reading.reset(token)


def replica_or_primary(read: Callable[[], T]) -> T:
    """``read()`` with its member reads on the replica; if the replica fails
    (``OperationalError``/``InterfaceError``: unreachable, connection cut),
    ``read()`` again on the primary. Without a replica: just ``read()``."""
    if not replica_available():
        return read()
    try:
        with replica_reads():
            return read()
    except (OperationalError, InterfaceError) as error:
        replica_failed(error)
    return read()


def replica_failed(error: Exception) -> None:
    """Read from the primary for the next ``RETRY_SECONDS`` (this process)."""
    global _skip_until, _last_error
    _skip_until = time.monotonic() + RETRY_SECONDS
    _last_error = f"{type(error).__name__}: {error}".strip()[:200]
    logger.warning(
        "read replica failed (%s): reading from the primary for %.0fs",
        _last_error,
        RETRY_SECONDS,
    )
    with contextlib.suppress(Exception):
        connections[REPLICA].close()


def replica_state() -> dict:
    """Whether reads go to the replica now, and the last failure (for /health)."""
    skipped = max(0.0, _skip_until - time.monotonic())
    return {
        "reads": "replica" if skipped == 0 else "primary",
        "retry_in_seconds": round(skipped, 1),
        "last_error": _last_error or None,
    }


def replica_reset() -> None:
    """Forget a failure (tests; a process that knows the replica is back)."""
    global _skip_until, _last_error
    _skip_until, _last_error = 0.0, ""


class ReplicaRouter:
    """Member-table reads inside :func:`replica_reads` to the replica; all writes,
    and all other reads, to the primary. Never migrates the replica (it follows the
    primary's schema by replication)."""

    def db_for_read(self, model, **hints):
        if (
            _reading.get()
            and model._meta.app_label in REPLICA_APPS
            and replica_available()
        ):
            return REPLICA
        return None  # the primary (or the database the instance came from)

    def db_for_write(self, model, **hints):
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        both = {obj1._state.db, obj2._state.db}
        return True if both <= {DEFAULT_DB_ALIAS, REPLICA} else None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return False if db == REPLICA else None
