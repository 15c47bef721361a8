"""Input that must fail as a 400, however it is malformed.

Its own module: ``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]`` is resolved while
``rest_framework.views`` is imported, which ``config.api`` itself imports.
"""

from rest_framework import exceptions
from rest_framework.parsers import JSONParser


class SafeJSONParser(JSONParser):
    """``JSONParser`` for which JSON nested deeper than Python's recursion limit
    (``[[[[…`` 100,000 levels) is a 400 like any other malformed body, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(
                "JSON parse error - nested too deeply."
            ) from None
