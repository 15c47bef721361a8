"""The project's roof, and the kernel every app builds on.

**Roof** — the only modules that name the apps (``accounts``, ``interactions``,
``recommender``, ``registry``), and only as a roof does: ``settings`` (and
``test_settings``) list them in ``INSTALLED_APPS`` and point at their tasks,
``urls`` includes their URLconfs, ``celery`` autodiscovers their tasks, ``wsgi``
and ``gunicorn.conf`` start the web process.

**Kernel** — import no app, at module level or inside a function, so that any app
may import them: ``api`` (``ApplicationError``, the DRF exception handler,
pagination, throttle), ``fields``, ``openapi``, ``admin`` (admin helpers), ``cli`` and
``progress`` (management command output), ``chunked``, ``middleware``,
``db_routers`` (its replica policy holds the member apps' labels, as
strings), ``db_deadline``, ``faults``, ``logging_setup``,
``gunicorn_errors``, ``gunicorn_worker``, and the endpoints ``health`` and
``metrics``, to which apps add their own components (``health_components_register``,
``database_collector_register``) from their ``AppConfig.ready``.
"""

from config.celery import app as celery_app

__all__ = ("celery_app",)
