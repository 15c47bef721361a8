import os

# This process serves web requests: settings give its database connections the
# web statement timeout (WEB_STATEMENT_TIMEOUT), which commands, Celery workers
# and the bundle loads must not have.
os.environ["KINDRED_WEB_PROCESS"] = "1"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

from config.chunked import ChunkedBodyMiddleware  # noqa: E402
from config.db_deadline import DatabaseDeadlineMiddleware  # noqa: E402

application = ChunkedBodyMiddleware(
    DatabaseDeadlineMiddleware(
        get_wsgi_application(), deadline=settings.WEB_DATABASE_DEADLINE
    )
)
