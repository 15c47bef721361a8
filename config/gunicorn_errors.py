"""gunicorn's own error answers in the API's JSON error shape.

gunicorn refuses some requests before Django sees them (a request line longer than
``limit_request_line``: 414; too many or too large headers: 431; a malformed
request: 400) and answers them with a small HTML page. Clients of a JSON API should
get ``{"message", "code", "fields"}`` there too. gunicorn has no hook for this
answer, so ``install()`` (called from ``config/gunicorn.conf.py``, in the master
before it forks) replaces the one function that writes it; the same status line,
``Connection: close`` and length as gunicorn's, only the body differs.
"""

import json

from gunicorn import util

CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "error",
    501: "not_implemented",
}


def json_error_response(status_int: int, reason: str, mesg: str) -> bytes:
    """The raw HTTP/1.1 response for one of gunicorn's own errors."""
    body = json.dumps(
        {
            "message": mesg or reason,
            "code": CODES.get(status_int, "error"),
            "fields": {},
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


def write_json_error(sock, status_int, reason, mesg) -> None:
    util.write_nonblock(sock, json_error_response(status_int, reason, mesg))


def install() -> None:
    util.write_error = write_json_error
