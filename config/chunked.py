"""Request bodies sent with ``Transfer-Encoding: chunked``.

Django reads exactly ``CONTENT_LENGTH`` bytes of a request body, and a chunked
request has no Content-Length: Django saw an empty body and answered "field
required". gunicorn decodes the chunks (and says so with ``wsgi.input_terminated``),
so this WSGI middleware reads the decoded body, at most one byte more than
``DATA_UPLOAD_MAX_MEMORY_SIZE``, and hands Django a body with a length. A body over
the limit keeps a length over the limit, so Django refuses it exactly like an
over-long body with a Content-Length (413 JSON under ``/api/``).
"""

import io

from django.conf import settings


def _is_chunked(environ) -> bool:
    return (
        "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        and not environ.get("CONTENT_LENGTH")
        and bool(environ.get("wsgi.input_terminated"))
    )


class ChunkedBodyMiddleware:
    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        if _is_chunked(environ):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            stream = environ["wsgi.input"]
            body = stream.read() if limit is None else stream.read(limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.application(environ, start_response)
