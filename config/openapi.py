"""What the generated OpenAPI schema says beyond the views' own annotations.

``KindredAutoSchema`` (``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]``) documents, for
every operation, what ``config.api`` and ``config.middleware`` do to all of them:

* the error body ``{"message", "code", "fields"}`` (component ``Error``) on the
  statuses the operation can answer with: 400 when it takes input, 401 and 403 when
  it needs authentication, 404 when it needs a member or an id, 413 and 415 when
  it takes a body, 429 when it is throttled, and 503 (the database unreachable) on
  every operation;
* the ``X-Request-ID`` request header and the ``X-Request-ID`` / ``X-Process-Time``
  response headers (every status);
* a tag per resource (``accounts``, ``interactions``, ``recommendations``…) so a
  generated client groups operations sensibly.
"""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

API_PREFIX = "/api/v1/"

ERROR_DESCRIPTIONS = {
    "400": "Invalid input: `fields` maps each field at fault to its messages.",
    "401": "Missing or invalid credentials (`Authorization: Token <key>`).",
    "403": "Authenticated but not allowed (or a session request without CSRF).",
    "404": "No such object, or the account has no member profile.",
    "413": "The request body is larger than the server accepts.",
    "415": "Unsupported media type: send `Content-Type: application/json`.",
    "429": "Too many requests: throttled; retry after the `Retry-After` seconds.",
    "503": "The database cannot be reached just now; retry after the "
    "`Retry-After` seconds.",
}


class ErrorSerializer(serializers.Serializer):
    """Every API error (``config.api.exception_handler``)."""

    message = serializers.CharField(
        help_text="Human-readable; names the field at fault, e.g. "
        '"limit: Ensure this value is less than or equal to 100."'
    )
    code = serializers.CharField(
        help_text='Machine-readable: "invalid", "not_authenticated", '
        '"permission_denied", "not_found", "throttled"…'
    )
    fields = serializers.DictField(
        # Usually a list of messages; an object of the same shape for a nested
        # object (``preferences``) or list items (``interests``: index → messages).
        child=serializers.JSONField(),
        help_text="Field name → its messages (a nested object or list gives an "
        "object of the same shape); empty when the error is not about one field.",
    )

    class Meta:
        ref_name = "Error"


REQUEST_ID_PARAMETERS = [
    OpenApiParameter(
        "X-Request-ID",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        # No pattern: any value is accepted (an insane one is replaced, not
        # refused), and the schema must not claim it would be rejected.
        description="Your id for this request (1-64 of A-Z a-z 0-9 . _ -), echoed "
        "in the response; anything else is replaced by a new uuid4.",
    ),
    OpenApiParameter(
        "X-Request-ID",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=True,
        required=True,
        description="The request id: yours if it was sane, else a new uuid4; "
        "it is on every log line of the request.",
    ),
    OpenApiParameter(
        "X-Process-Time",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=True,
        required=True,
        description="Seconds the server spent on the request, e.g. 0.012345.",
    ),
]


class KindredAutoSchema(AutoSchema):
    def get_override_parameters(self):
        return [*super().get_override_parameters(), *REQUEST_ID_PARAMETERS]

    def get_tags(self) -> list[str]:
        if self.path.startswith(API_PREFIX):
            resource = self.path[len(API_PREFIX) :].split("/", 1)[0]
            if resource:
                return [resource]
        return super().get_tags()

    def _get_request_body(self, direction="request"):
        # drf-spectacular documents bodies of POST, PUT and PATCH only; a DELETE
        # that declares one (the account deletion's password) has it too.
        if self.method != "DELETE" or self.get_request_serializer() is None:
            return super()._get_request_body(direction)
        self.method = "POST"
        try:
            return super()._get_request_body(direction)
        finally:
            self.method = "DELETE"

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(
            path, path_regex, path_prefix, method, registry
        )
        if operation is None or not path.startswith(API_PREFIX):
            return operation
        responses = operation["responses"]
        for code in self._error_codes(operation):
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    OpenApiResponse(ErrorSerializer, ERROR_DESCRIPTIONS[code]), code
                )
        return operation

    def _error_codes(self, operation: dict) -> list[str]:
        takes_input = "requestBody" in operation or any(
            parameter["in"] in ("query", "path")
            for parameter in operation.get("parameters", [])
        )
        security = operation.get("security")
        needs_auth = bool(security) and {} not in security
        has_ids = any(
            parameter["in"] == "path" for parameter in operation.get("parameters", [])
        )
        codes = []
        if takes_input:
            codes.append("400")
        if needs_auth:
            codes += ["401", "403"]
        if needs_auth or has_ids:
            codes.append("404")
        if "requestBody" in operation:
            codes += ["413", "415"]
        if self.view.get_throttles():
            codes.append("429")
        codes.append("503")
        return codes


PROFILE = ("/api/v1/profiles/{user_id}/", "get")

# (path, method, response status) -> link name -> (target, path parameter, value).
# Every response that carries a member's id links to that member's public profile,
# so a stateful client (schemathesis' stateful phase) can chain the calls.
LINKS = {
    ("/api/v1/accounts/", "post", "201"): {
        "GetSignedUpProfile": (PROFILE, "user_id", "$response.body#/id"),
    },
    ("/api/v1/interactions/", "post", "201"): {
        "GetTargetProfile": (PROFILE, "user_id", "$response.body#/target"),
    },
    ("/api/v1/interactions/", "post", "200"): {
        "GetTargetProfile": (PROFILE, "user_id", "$response.body#/target"),
    },
    ("/api/v1/interactions/", "get", "200"): {
        "GetFirstTargetProfile": (
            PROFILE,
            "user_id",
            "$response.body#/results/0/target",
        ),
    },
    ("/api/v1/matches/", "get", "200"): {
        "GetFirstMatchProfile": (
            PROFILE,
            "user_id",
            "$response.body#/results/0/member/user_id",
        ),
    },
    ("/api/v1/recommendations/", "get", "200"): {
        "GetFirstRecommendedProfile": (
            PROFILE,
            "user_id",
            "$response.body#/results/0/user_id",
        ),
    },
    ("/api/v1/profiles/me/", "get", "200"): {
        "GetOwnPublicProfile": (PROFILE, "user_id", "$response.body#/user_id"),
    },
    ("/api/v1/profiles/me/", "patch", "200"): {
        "GetOwnPublicProfile": (PROFILE, "user_id", "$response.body#/user_id"),
    },
}


def add_links(result, generator, request, public):
    """drf-spectacular postprocessing hook: OpenAPI ``links`` from the responses
    that carry a member id to ``GET /api/v1/profiles/{user_id}/``."""
    paths = result.get("paths", {})
    for (path, method, status), links in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        for name, ((target_path, target_method), parameter, value) in links.items():
            target = paths.get(target_path, {}).get(target_method)
            if target is None:
                continue
            response.setdefault("links", {})[name] = {
                "operationId": target["operationId"],
                "parameters": {parameter: value},
                "description": f"`{parameter}` of {target_method.upper()} "
                f"{target_path} is `{value}`.",
            }
    return result
