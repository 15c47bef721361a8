"""Structured logs with structlog: one JSON object per line in production, readable
coloured lines on the console with ``DEBUG``.

Every record goes through the same processors, whether it was written with
``structlog.get_logger()`` or the standard library's ``logging.getLogger()`` (Django,
Celery, gunicorn, our own modules). Context bound with
``structlog.contextvars.bind_contextvars`` is merged into each line: the request id
(``config.middleware``) and Celery's task id and name (``config.celery``). The user id
is added to a request's lines once authentication has resolved the user, without ever
forcing a database lookup just to log.

Nothing here needs Django settings: gunicorn's master process uses
:func:`logging_config` as well (``config/gunicorn.conf.py``).
"""

from __future__ import annotations

import contextvars
import logging.config

import structlog
import structlog.tracebacks
from django.utils.functional import empty

# The request being served by this thread (set by RequestContextMiddleware).
current_request: contextvars.ContextVar = contextvars.ContextVar(
    "kindred_current_request", default=None
)


def add_user_id(logger, method_name: str, event_dict: dict) -> dict:
    """Add ``user_id`` when the current request's user is already known.

    Django's ``request.user`` is a lazy object: it is only read here if something
    else (a view, DRF's authentication) has resolved it already.
    """
    request = current_request.get()
    if request is None or "user_id" in event_dict:
        return event_dict
    user = request.__dict__.get("user")
    wrapped = getattr(user, "_wrapped", user)
    if wrapped is None or wrapped is empty:
        return event_dict  # no user yet, or a lazy one nobody has resolved
    if getattr(wrapped, "is_authenticated", False):
        event_dict["user_id"] = wrapped.pk
    return event_dict


def _shared_processors() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        add_user_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]


def structlog_configure() -> None:
    """Route structlog's loggers through the standard library's handlers (so both
    kinds of logger end up formatted by :func:`logging_config`'s formatter)."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def logging_config(*, debug: bool, level: str = "INFO") -> dict:
    """A ``logging.config.dictConfig`` dict: JSON lines, or console lines if
    ``debug``, on stderr, for every logger."""
    structlog_configure()
    renderer = (
        structlog.dev.ConsoleRenderer(colors=False)
        if debug
        else structlog.processors.JSONRenderer()
    )
    final = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if not debug:
        # The console renderer pretty-prints tracebacks itself.
        # No local variables: they may hold passwords or tokens.
        final.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [*final, renderer],
                "foreign_pre_chain": [
                    *_shared_processors(),
                    structlog.stdlib.PositionalArgumentsFormatter(),
                ],
            }
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "structured"}
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's own request logger repeats what our request line says.
            "django.server": {"level": "WARNING"},
            # Which CPU build of FAISS loaded: five lines per process otherwise.
            "faiss.loader": {"level": "WARNING"},
            "gunicorn.error": {"handlers": [], "propagate": True, "level": level},
            "gunicorn.access": {"handlers": [], "propagate": True, "level": level},
        },
    }


def logging_reapply(config: dict) -> None:
    """Re-apply ``config`` (Celery calls this instead of installing its own)."""
    logging.config.dictConfig(config)
