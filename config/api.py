"""API conventions shared by every app: one error shape, one pagination, and what a
failed dependency looks like to a client (a 503, a throttle that fails open)."""

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)

# Seconds a client is asked to wait before retrying when the database is away.
UNAVAILABLE_RETRY_AFTER = 5


def query_integer(request, name: str, *, default: int, maximum: int | None = None):
    """The query parameter ``name`` as a whole number from 1 (to ``maximum``), or
    ``default`` when absent. Present but empty (``?page=``), not a whole number or
    out of range: a 400 naming it, as the schema (an integer, minimum 1) says."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # Plain ASCII digits only: int() would also take " 5", "+5", "1_0" and "١".
    value = int(raw) if raw.isascii() and raw.isdigit() else 0
    if value < 1 or (maximum is not None and value > maximum):
        upper = f" to {maximum}" if maximum is not None else " or more"
        raise exceptions.ValidationError(
            {name: [f"Must be a whole number from 1{upper}."]}
        )
    return value


class StandardPagination(PageNumberPagination):
    """``?page=`` and ``?page_size=`` (1..100); a bad or empty value is a 400 naming
    it, not silently the default."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_size(self, request):
        return query_integer(
            request,
            self.page_size_query_param,
            default=self.page_size,
            maximum=self.max_page_size,
        )

    def get_page_number(self, request, paginator):
        return query_integer(request, self.page_query_param, default=1)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
            if parameter["name"] == self.page_query_param:
                parameter["schema"].update(minimum=1)
        return parameters


class ApplicationError(Exception):
    """A foreseeable failure of a service, reported to the client as a 4xx."""

    def __init__(self, message: str, *, field: str | None = None, status_code=400):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status_code = status_code


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = _first_message(value)
            return inner if key == "non_field_errors" else f"{key}: {inner}"
        return "Invalid input."
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "Invalid input."
    return str(detail)


class CacheTolerantScopedRateThrottle(ScopedRateThrottle):
    """``ScopedRateThrottle`` that lets the request through when its cache (Redis)
    is unreachable: an outage of the cache must not turn sign-up, log-in and
    recording interactions into 500s. Limits apply again as soon as it is back."""

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except Exception:  # noqa: BLE001 - any cache client error: fail open
            logger.warning(
                "throttle cache unreachable; %s not rate limited",
                getattr(view, "throttle_scope", "request"),
                exc_info=True,
            )
            return True


def database_unavailable_response() -> Response:
    """A 503 in the API's error shape, asking the client to retry shortly."""
    return Response(
        {
            "message": "The service is temporarily unavailable; retry shortly.",
            "code": "unavailable",
            "fields": {},
        },
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
    )


def exception_handler(exc, context):
    """Render every API error as ``{"message", "code", "fields"}``.

    ``message`` is human-readable and names the field at fault; ``fields`` maps each
    field to its messages (empty when the error is not about one field). A database
    that cannot be reached (refused, dropped, timed out) is a 503 with
    ``Retry-After``, never a 500 with a traceback.
    """
    if isinstance(exc, OperationalError | InterfaceError):
        logger.error("database unavailable: %s", exc, exc_info=exc)
        return database_unavailable_response()
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {
                "message": "The request body is larger than "
                f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
                "code": "too_large",
                "fields": {},
            },
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, ApplicationError):
        fields = {exc.field: [exc.message]} if exc.field else {}
        message = f"{exc.field}: {exc.message}" if exc.field else exc.message
        return Response(
            {"message": message, "code": "invalid", "fields": fields},
            status=exc.status_code,
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = exc.detail if isinstance(exc, exceptions.APIException) else response.data
    fields = detail if isinstance(detail, dict) and "detail" not in detail else {}
    if isinstance(detail, list):
        fields = {"non_field_errors": detail}
    code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
    if not isinstance(code, str):
        code = (
            "invalid"
            if response.status_code == status.HTTP_400_BAD_REQUEST
            else "error"
        )
    response.data = {"message": _first_message(detail), "code": code, "fields": fields}
    return response


API_PATH_PREFIX = "/api/"


def page_not_found(request, exception=None):
    """``handler404``: an unknown URL under ``/api/`` (e.g. ``/profiles/-1/``) gets
    the API's JSON error, not an HTML page."""
    if request.path.startswith(API_PATH_PREFIX):
        return JsonResponse(
            {"message": "Not found.", "code": "not_found", "fields": {}}, status=404
        )
    return defaults.page_not_found(request, exception)


def server_error(request):
    """``handler500``: JSON under ``/api/`` (never an HTML page or a traceback)."""
    if request.path.startswith(API_PATH_PREFIX):
        return JsonResponse(
            {"message": "Internal server error.", "code": "error", "fields": {}},
            status=500,
        )
    return defaults.server_error(request)
