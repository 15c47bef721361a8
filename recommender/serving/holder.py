"""Hot reload: the process's :class:`BundleHolder`, keyed by the serving generation.

:meth:`BundleHolder.generation_current` re-reads the registry generation (id of the
latest ``ModelActivation``) and the newest index id at most every
``KINDRED["REGISTRY_POLL_SECONDS"]``. When it moves (a promotion, rollback,
challenger change or index rebuild), or the member store is older than
``KINDRED["SERVING_STORE_REFRESH_SECONDS"]`` (default 600), a new bundle loads in a
background thread (``KINDRED["SERVING_RELOAD_IN_BACKGROUND"]``, default on) while
requests keep using the current one; the swap is one reference assignment. Parts
whose version did not change are reused. A failed load (checksum mismatch, missing
file, incompatible model) keeps the whole previous bundle, flags health degraded and
is retried when the generation moves again or after a minute.

One holder per process, made on first use (after the fork: gunicorn runs without
``--preload``); nothing loads before the first request.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time

from django.conf import settings
from django.db import connections

from recommender import metrics
from recommender.serving.arms import registry_snapshot_read
from recommender.serving.bundle import (
    Bundle,
    bundle_build,
    bundle_versions_export,
    kindred_setting,
    statement_timeout_lifted,
    store_is_stale,
)
from registry.models import IndexArtifact
from registry.selectors import registry_generation

logger = logging.getLogger(__name__)

RETRY_SECONDS = 60.0
# How long a request waits for its process's first load before answering without
# models (KINDRED["SERVING_FIRST_LOAD_WAIT_SECONDS"]).
DEFAULT_FIRST_LOAD_WAIT_SECONDS = 10.0


def _generation_read() -> str:
    newest_index = (
        IndexArtifact.objects.order_by("-id").values_list("id", flat=True).first()
    )
    return f"{registry_generation()}.{newest_index or 0}"


class BundleHolder:
    """The bundle this process serves with, and the state of its (re)loading.

    Requests read :attr:`bundle` without a lock: it is only ever replaced whole.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards the fields below
        self.load_done = threading.Condition(self.lock)  # notified when loading ends
        self.load_lock = threading.Lock()  # one load at a time
        self.generation_lock = threading.Lock()  # one generation re-read at a time
        self.bundle: Bundle | None = None
        self.generation: str | None = None
        self.checked_at = -math.inf
        self.loading = False
        self.thread: threading.Thread | None = None
        self.attempted: str | None = None
        self.attempted_at = -math.inf
        self.degraded = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    # --- the request's side ----------------------------------------------------

    def generation_current(self) -> str:
        """The serving generation, re-read from the database at most every
        ``KINDRED["REGISTRY_POLL_SECONDS"]``."""
        poll = float(settings.KINDRED["REGISTRY_POLL_SECONDS"])
        now = time.monotonic()
        known = self.generation
        if known is not None and now - self.checked_at < poll:
            return known
        # One thread of the process re-reads it; the others keep answering with
        # the known generation meanwhile instead of all querying at once (under
        # load the query is slow, and every thread of a worker crossed the poll
        # together: py-spy had it at ~28% of cache-hit request time at 100,000
        # members).
        if not self.generation_lock.acquire(blocking=known is None):
            return known
        try:
            if self.generation is not None and (
                time.monotonic() - self.checked_at < poll
            ):
                return self.generation  # another thread just re-read it
            try:
                generation = _generation_read()
            except Exception:  # noqa: BLE001 - keep serving what is loaded
                logger.warning("registry generation unreadable", exc_info=True)
                return self.generation or "0.0"
            self.generation, self.checked_at = generation, now
            return generation
        finally:
            self.generation_lock.release()

    def bundle_for_request(self) -> Bundle | None:
        """The bundle to answer with; starts a reload when one is due."""
        generation = self.generation_current()
        bundle = self.bundle
        if bundle is None:
            return self._first_bundle(generation)
        if self._needs_reload(bundle, generation):
            self._reload_soon(generation)
        return self.bundle  # the new one if the reload ran inline

    def provisional(self, bundle: Bundle | None) -> bool:
        """A request served without a bundle only because the first load was (or
        still is) under way: not a lasting answer."""
        return bundle is None and (self.loading or self.bundle is not None)

    def _first_bundle(self, generation: str) -> Bundle | None:
        """Nothing loaded in this process yet: start the load, or join the one in
        progress, and wait for it (at most ``SERVING_FIRST_LOAD_WAIT_SECONDS``)
        rather than answer without models. ``None`` when the load failed just now
        (retried after ``RETRY_SECONDS``) or is still running after the wait."""
        self._reload_soon(generation)  # a no-op while a load runs or just failed
        wait = float(
            kindred_setting(
                "SERVING_FIRST_LOAD_WAIT_SECONDS", DEFAULT_FIRST_LOAD_WAIT_SECONDS
            )
        )
        with self.load_done:
            self.load_done.wait_for(lambda: not self.loading, timeout=wait)
        return self.bundle

    def _needs_reload(self, bundle: Bundle, generation: str) -> bool:
        retry_partial = bundle.errors and (
            time.monotonic() - self.attempted_at >= RETRY_SECONDS
        )
        return bool(
            bundle.generation != generation or store_is_stale(bundle) or retry_partial
        )

    # --- loading ---------------------------------------------------------------

    def _reload_soon(self, generation: str) -> None:
        with self.lock:
            if self.loading:
                return
            recently_failed = self.attempted == generation and (
                time.monotonic() - self.attempted_at < RETRY_SECONDS
            )
            bundle = self.bundle
            if recently_failed and (bundle is None or not store_is_stale(bundle)):
                return
            self.loading = True
        if not kindred_setting("SERVING_RELOAD_IN_BACKGROUND", True):
            try:
                self.load(generation)
            finally:
                self._load_finished()
            return
        thread = threading.Thread(
            target=self._load_in_thread,
            args=(generation,),
            name="kindred-reload",
            daemon=True,
        )
        self.thread = thread
        thread.start()

    def _load_in_thread(self, generation: str) -> None:
        try:
            self.load(generation)
        except Exception:  # noqa: BLE001 - logged; the previous bundle keeps serving
            logger.exception("serving bundle reload failed")
        finally:
            self._load_finished()
            connections.close_all()  # this thread's own connections

    def _load_finished(self) -> None:
        with self.load_done:
            self.loading = False
            self.load_done.notify_all()

    def load(self, generation: str) -> None:
        """Load the bundle for ``generation`` and swap it in (see the module doc)."""
        with self.load_lock, statement_timeout_lifted():
            old = self.bundle
            if old is not None and not self._needs_reload(old, generation):
                return  # another thread loaded it while this one waited
            self.attempted, self.attempted_at = generation, time.monotonic()
            try:
                snapshot = registry_snapshot_read()
            except Exception as error:  # noqa: BLE001
                self._record_failure([f"registry unreadable: {error}"], keep=old)
                return
            if (
                old is not None
                and old.snapshot.key() == snapshot.key()
                and not store_is_stale(old)
                and not old.errors
            ):
                # Nothing to load (e.g. only a traffic share changed).
                self._swap(
                    dataclasses.replace(old, generation=generation, snapshot=snapshot)
                )
                return
            bundle = bundle_build(generation, snapshot, old)
            bundle.load_seconds = time.monotonic() - self.attempted_at
            metrics.SERVING_LOAD_SECONDS.observe(bundle.load_seconds)
            if bundle.errors:
                if old is not None and not old.errors:
                    self._record_failure(bundle.errors, keep=old)
                    return
                self._record_failure(bundle.errors, keep=None)
                self._swap(bundle, clear_degraded=False)
                return
            self._swap(bundle)
            logger.info(
                "serving bundle %s loaded in %.2fs (%s members)",
                generation,
                bundle.load_seconds,
                bundle.population.n if bundle.population else 0,
            )

    def _record_failure(self, errors: list[str], *, keep: Bundle | None) -> None:
        message = "; ".join(errors)
        logger.error(
            "serving bundle load failed (%s): %s",
            "keeping the previous bundle" if keep is not None else "serving degraded",
            message,
        )
        metrics.SERVING_LOAD_FAILURES.inc()
        metrics.SERVING_DEGRADED.set(1)
        with self.lock:
            self.degraded = True
            self.last_error, self.last_error_at = message, time.time()

    def _swap(self, bundle: Bundle, *, clear_degraded: bool = True) -> None:
        self.bundle = bundle  # the atomic swap: one reference assignment
        if clear_degraded:
            with self.lock:
                self.degraded = False
            metrics.SERVING_DEGRADED.set(0)
        bundle_versions_export(bundle)

    # --- tests and operations --------------------------------------------------

    def reset(self) -> None:
        """Forget the loaded bundle and poll state."""
        self.wait_idle()
        with self.lock:
            self.bundle = None
            self.generation = None
            self.checked_at = -math.inf
            self.attempted, self.attempted_at = None, -math.inf
            self.degraded = False
            self.last_error = self.last_error_at = None

    def refresh(self) -> str:
        """Poll the registry now and, if the generation moved, reload
        synchronously. Returns the generation."""
        self.wait_idle()
        self.checked_at = -math.inf
        generation = self.generation_current()
        bundle = self.bundle
        if bundle is None or bundle.generation != generation:
            self.load(generation)
        return generation

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait for a background reload in progress, if any."""
        thread = self.thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)


_holder: BundleHolder | None = None
_holder_made = threading.Lock()


def bundle_holder() -> BundleHolder:
    """This process's holder, made on first use."""
    global _holder
    holder = _holder
    if holder is None:
        with _holder_made:
            if _holder is None:
                _holder = BundleHolder()
            holder = _holder
    return holder


def serving_generation() -> str:
    """The serving generation, "<registry generation>.<newest index id>": changes
    with every promotion, rollback, challenger change and index build. Re-read from
    the database at most every ``KINDRED["REGISTRY_POLL_SECONDS"]`` per process."""
    # Read on every request, cache hits included: no call to make the holder once
    # there is one.
    return (_holder or bundle_holder()).generation_current()


def serving_reset() -> None:
    """Forget the loaded bundle and poll state (tests; a fresh process)."""
    bundle_holder().reset()


def serving_refresh() -> str:
    """Poll the registry now and, if the generation moved, reload synchronously
    (what the background reload would do). Returns the generation."""
    return bundle_holder().refresh()


def serving_wait_idle(timeout: float = 60.0) -> None:
    """Wait for a background reload in progress, if any."""
    bundle_holder().wait_idle(timeout)
