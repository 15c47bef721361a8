"""Django's PostgreSQL backend with a health check that costs no round trip while
the connection is busy.

``CONN_HEALTH_CHECKS`` makes Django run ``SELECT 1`` before the first query of
every request on a persistent connection, so a connection the server dropped
while it sat idle (a restart, an idle timeout) is replaced instead of failing the
request. Under load that is one extra round trip per request: py-spy put it at
12 % of a cache hit's samples (issue 16). Here the check is skipped when the
previous request on the same connection used it and finished without a database
error less than :data:`TRUSTED_SECONDS` ago; a connection that sat idle longer is
checked as before. A server lost within that second fails the request that meets
it (a 503, as a loss in the middle of a request always did), and Django closes the
broken connection when that request ends.
"""

import time

from django.db.backends.postgresql import base

# How long after a request that used the connection without error the next one
# trusts it without a SELECT 1.
TRUSTED_SECONDS = 1.0

NEVER = -float("inf")


class DatabaseWrapper(base.DatabaseWrapper):
    _answered_at = NEVER  # when the last request that used the connection ended
    _used = False  # the current request opened a cursor on the connection

    def close_if_health_check_failed(self):
        self._used = True
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and not self.connection.closed
            and time.monotonic() - self._answered_at < TRUSTED_SECONDS
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def close_if_unusable_or_obsolete(self):
        # Django calls this as each request starts and ends: only the end of a
        # request that used the connection renews the trust (or ends it, after an
        # error), never the start of the next one, which may follow idle minutes.
        used, self._used = self._used, False
        failed = self.errors_occurred
        super().close_if_unusable_or_obsolete()
        if used:
            ok = not failed and self.connection is not None
            self._answered_at = time.monotonic() if ok else NEVER
