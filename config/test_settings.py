"""Settings for the test suite: the real settings, plus what only tests may relax."""

import os

# Tests never need a real secret; production settings still require one.
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-not-a-secret")

from config.settings import *  # noqa: E402,F403
from config.settings import CACHES, DATABASES, REDIS_URL  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# One database, whatever the environment says: the read-replica tests add their
# own replica (tests/recommender/test_read_replica.py); any other test reading
# through a router to a database it did not ask for would fail.
DATABASES.pop("replica", None)
DATABASE_ROUTERS: list[str] = []
STORAGES = {  # noqa: F405
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if not REDIS_URL:
    # The embedded file cache, apart from a developer's running server's (tests
    # clear the cache).
    import tempfile

    CACHES["default"]["LOCATION"] = tempfile.mkdtemp(prefix="kindred-test-cache-")
if REDIS_URL:
    # Keep test keys apart from a developer's own cache in the same Redis.
    CACHES["default"]["KEY_PREFIX"] = "kindred-test"
