"""One place for what every request gets: a request id, timing, a log line and
latency metrics.

``RequestContextMiddleware`` is the first middleware, so it sees every response
(redirects, static files, errors) and times the whole stack:

* the request id is the client's ``X-Request-ID`` when it is tame (it ends up in
  headers, logs and the recommendation impression log), else a new uuid4; views
  read it as ``request.request_id``; every response echoes it in ``X-Request-ID``
  and gives its own duration in ``X-Process-Time`` (seconds);
* every log line written while the request is served carries ``request_id`` (and
  ``user_id`` once known, see ``config.logging_setup``);
* one ``request`` log line per request (unless ``LOG_REQUESTS`` is off) with method,
  path, route, status and ``duration_ms``;
* ``http_request_duration_seconds{route,method}`` and
  ``http_responses_total{route,method,status}``, labelled by the resolved URL name.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from django.conf import settings

from config.logging_setup import current_request
from config.metrics import UNMATCHED_ROUTE, http_request_observe

SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

logger = structlog.get_logger("kindred.request")


def request_id_from(request) -> str:
    """The client's X-Request-ID when it is sane, else a new uuid4."""
    given = request.headers.get("X-Request-ID", "")
    return given if SANE_REQUEST_ID.fullmatch(given) else str(uuid.uuid4())


def route_name(request) -> str:
    """The resolved URL's name (``"recommendation-list"``, ``"admin:index"``), the
    route pattern for unnamed URLs, or ``"unmatched"``."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED_ROUTE
    return match.view_name or match.route or UNMATCHED_ROUTE


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.log_requests = getattr(settings, "LOG_REQUESTS", True)

    def __call__(self, request):
        started = time.perf_counter()
        request.request_id = request_id_from(request)
        request_token = current_request.set(request)
        context_tokens = structlog.contextvars.bind_contextvars(
            request_id=request.request_id
        )
        try:
            response = self.get_response(request)
            seconds = time.perf_counter() - started
            route = route_name(request)
            response["X-Request-ID"] = request.request_id
            response["X-Process-Time"] = f"{seconds:.6f}"
            http_request_observe(
                route=route,
                method=request.method,
                status=response.status_code,
                seconds=seconds,
            )
            if self.log_requests:
                log = logger.warning if response.status_code >= 500 else logger.info
                log(
                    "request",
                    method=request.method,
                    path=request.path,
                    route=route,
                    status=response.status_code,
                    duration_ms=round(seconds * 1000, 2),
                )
            return response
        finally:
            structlog.contextvars.reset_contextvars(**context_tokens)
            current_request.reset(request_token)


class PrivateApiResponsesMiddleware:
    """Answers under ``/api/v1/`` belong to the member who asked (their profile,
    token, matches, recommendations): ``Cache-Control: private, no-store`` unless the
    view said otherwise, so no shared proxy or browser cache keeps them."""

    PREFIX = "/api/v1/"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path.startswith(self.PREFIX) and not response.has_header(
            "Cache-Control"
        ):
            response["Cache-Control"] = "private, no-store"
        return response
