import pytest
from django.db import connection

from accounts.demo import demo_members, demo_seed
from tests.reliability.harness import RedisServer, WebServer, database_url


@pytest.fixture
def postgres(transactional_db):
    """Committed data, on PostgreSQL: what separate processes and threads can see."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def trained(postgres, media):
    """200 demo members with trained, active models and index (committed)."""
    from tests.recommender.serving_fixtures import train_and_activate

    demo_seed(users=200, seed=11)
    return train_and_activate()


@pytest.fixture
def open_member(trained):
    """A demo member with a learned taste and open preferences (many candidates)."""
    return (
        demo_members()
        .filter(interactions_given__kind="like", preferences__max_distance_km=None)
        .order_by("pk")
        .first()
    )


@pytest.fixture
def own_redis(tmp_path):
    servers = []

    def start() -> RedisServer:
        server = RedisServer(tmp_path).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def web(postgres, tmp_path, media):
    """Start gunicorn (2 workers x 4 threads) on the test database; stopped after."""
    servers = []

    def start(*, database: str | None = None, **env) -> WebServer:
        server = WebServer(
            tmp_path=tmp_path,
            env={
                "DATABASE_URL": database or database_url(connection.settings_dict),
                "MEDIA_ROOT": str(media),
                "REGISTRY_POLL_SECONDS": "0.5",
                # Without REDIS_URL: each server's own file cache, never the
                # project's .cache/.
                "CACHE_DIR": str(tmp_path / f"cache-{len(servers)}"),
                **env,
            },
        ).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# The serving engine's per-test fixture (fresh engine, inline reloads).
from tests.recommender.serving_fixtures import engine  # noqa: E402,F401


def pytest_terminal_summary(terminalreporter):
    """The fuzzing figures (for RELIABILITY.md): requests sent, by status."""
    import sys
    from collections import Counter

    fuzz = sys.modules.get("tests.reliability.test_fuzz")
    if fuzz is None or not fuzz.CASES_RUN:
        return
    statuses = Counter(status for _, _, status in fuzz.CASES_RUN)
    paths = len({path for _, path, _ in fuzz.CASES_RUN})
    methods = len({(method.upper(), path) for method, path, _ in fuzz.CASES_RUN})
    terminalreporter.write_line(
        f"schemathesis: {len(fuzz.CASES_RUN)} requests, {paths} paths, {methods}"
        f" method/path pairs (undocumented methods too);"
        f" statuses {dict(sorted(statuses.items()))}"
    )
