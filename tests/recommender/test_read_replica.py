"""The optional read replica (DATABASE_REPLICA_URL): the serving member store loads
from it, everything that must see a fresh write (what is finally shown included)
reads from the primary, and a failing replica hands its reads to the primary.

The replica here is a second real PostgreSQL database on the same server, migrated
like the primary; :func:`replicate` copies the member tables across (``COPY``), so
the replica holds the primary as of that moment, and rows written later are
missing from it until the next copy, as on a lagging standby.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from django.apps import apps
from django.core.cache import cache
from django.core.management import call_command
from django.db import connections, router, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from accounts.models import Gender, Profile, User
from config.db_routers import REPLICA, REPLICA_APPS, replica_reads, replica_reset
from interactions.models import Interaction
from recommender.models import RecommendationLog
from recommender.serving.holder import bundle_holder
from registry.models import MLModel, ModelActivation
from tests.accounts.factories import member
from tests.recommender.serving_fixtures import BERLIN, scene_build, years_ago

BOTH = ["default", REPLICA]
ROUTERS = ["config.db_routers.ReplicaRouter"]


def _admin_sql(statement: str) -> None:
    """A statement outside any database (CREATE/DROP DATABASE)."""
    with connections["default"]._nodb_cursor() as cursor:
        cursor.execute(statement)


@pytest.fixture(scope="module")
def replica_database(django_db_setup, django_db_blocker):
    """A ``replica`` database alias on a second, migrated PostgreSQL database."""
    primary = connections["default"]
    if primary.vendor != "postgresql":
        pytest.skip("the read replica is a PostgreSQL feature")
    name = f"{primary.settings_dict['NAME']}_replica"
    quoted = primary.ops.quote_name(name)
    with django_db_blocker.unblock():
        _admin_sql(f"DROP DATABASE IF EXISTS {quoted}")
        _admin_sql(f"CREATE DATABASE {quoted}")
        replica_settings = copy.deepcopy(primary.settings_dict)
        replica_settings["NAME"] = name
        replica_settings["TEST"] = {**replica_settings["TEST"], "NAME": name}
        connections.settings[REPLICA] = replica_settings
        call_command("migrate", database=REPLICA, verbosity=0, interactive=False)
    yield name
    with django_db_blocker.unblock():
        connections[REPLICA].close()
        del connections[REPLICA]
        del connections.settings[REPLICA]
        _admin_sql(f"DROP DATABASE IF EXISTS {quoted}")


@pytest.fixture
def replica(replica_database, engine, settings):
    """The router on, a fresh serving engine (``engine``) that also reloads its
    member store on every request, and no remembered replica failure."""
    settings.DATABASE_ROUTERS = ROUTERS
    settings.KINDRED = {**settings.KINDRED, "SERVING_STORE_REFRESH_SECONDS": 0}
    replica_reset()
    yield replica_database
    replica_reset()


def replicate() -> None:
    """The replica catches up: the member tables copied from the primary."""
    tables = [
        model._meta.db_table
        for label in sorted(REPLICA_APPS)
        for model in apps.get_app_config(label).get_models(include_auto_created=True)
    ]
    source, target = connections["default"], connections[REPLICA]
    quote = target.ops.quote_name
    source.ensure_connection()
    with transaction.atomic(using=REPLICA):  # foreign keys are checked at commit
        with target.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(map(quote, tables))} CASCADE")
        for table in map(quote, tables):
            with (
                source.connection.cursor() as reader,
                target.connection.cursor() as writer,
                reader.copy(f"COPY {table} TO STDOUT (FORMAT binary)") as rows_out,
                writer.copy(f"COPY {table} FROM STDIN (FORMAT binary)") as rows_in,
            ):
                for block in rows_out:
                    rows_in.write(block)


def _recommend(client_for, user, limit: int = 20):
    response = client_for(user).get(f"/api/v1/recommendations/?limit={limit}")
    assert response.status_code == 200, response.content
    return response.json()


def _ids(body) -> set[int]:
    return {result["user_id"] for result in body["results"]}


def _late_joiner() -> User:
    return member(
        display_name="Late",
        gender=Gender.MALE,
        birth_date=years_ago(30),
        latitude=BERLIN[0],
        longitude=BERLIN[1],
        interests=["hiking", "travel"],
        preferences={"seeking_genders": ["female"]},
    )


def _tables(queries) -> str:
    return "\n".join(query["sql"] for query in queries)


@pytest.mark.django_db(transaction=True, databases=BOTH)
def test_only_member_reads_in_the_recommendation_scope_go_to_the_replica(replica):
    assert router.db_for_read(Profile) == "default"
    with replica_reads():
        for model in (User, Profile, Interaction):
            assert router.db_for_read(model) == REPLICA
        # Fresh-or-nothing reads stay on the primary even inside the scope.
        for model in (MLModel, ModelActivation, Token, RecommendationLog):
            assert router.db_for_read(model) == "default"
        for model in (User, Profile, Interaction, MLModel):
            assert router.db_for_write(model) == "default"
    assert router.db_for_read(Interaction) == "default"
    assert router.allow_migrate(REPLICA, "accounts") is False
    assert router.allow_migrate("default", "accounts") is True


@pytest.mark.django_db(transaction=True, databases=BOTH)
def test_the_member_store_loads_from_the_replica_and_what_is_shown_from_the_primary(
    replica, client_for
):
    scene = scene_build(fillers=4)
    replicate()
    liked, hiding = scene.others[0], scene.others[1]
    response = client_for(scene.viewer).post(
        "/api/v1/interactions/", {"target": liked.pk, "kind": "like"}, format="json"
    )
    assert response.status_code == 201, response.content
    response = client_for(hiding).patch(
        "/api/v1/profiles/me/", {"is_visible": False}, format="json"
    )
    assert response.status_code == 200, response.content
    late = _late_joiner()  # joins after the replica's copy

    with (
        CaptureQueriesContext(connections[REPLICA]) as on_replica,
        CaptureQueriesContext(connections["default"]) as on_primary,
    ):
        body = _recommend(client_for, scene.viewer)

    shown = _ids(body)
    # Everyone the replica knows and the viewer may see...
    assert {scene.tempting.pk, *(o.pk for o in scene.others[2:])} <= shown
    # ...not the member she liked a moment ago (her interactions: the primary),
    # nor the one who hid their profile a moment ago, still visible on the replica
    # (the shortlist re-check reads the primary)...
    assert liked.pk not in shown
    assert hiding.pk not in shown
    # ...nor the member the replica has not received yet (the store is its copy).
    assert late.pk not in shown
    # The store's interactions came through the replica's COPY (a raw cursor no
    # query capture sees): her like, made after the copy, is not in them.
    store = bundle_holder().bundle.population.store
    assert store.likes_received[store.index_of(np.array([liked.pk]))[0]] == 0
    assert Interaction.objects.filter(target=liked, kind="like").exists()
    replica_sql, primary_sql = _tables(on_replica), _tables(on_primary)
    # The member store's reads (every profile; closed accounts) ran on the replica.
    store_read = '"user__preferences__seeking_genders"'
    assert store_read in replica_sql and store_read not in primary_sql
    assert 'FROM "accounts_user" WHERE NOT "accounts_user"."is_active"' in replica_sql
    for table in ("registry_", "authtoken_token", "recommender_"):
        assert table not in replica_sql
    # The request's own reads ran on the primary: token, registry generation, the
    # viewer's history, the shortlist re-check.
    assert "authtoken_token" in primary_sql
    assert "registry_modelactivation" in primary_sql
    assert '"interactions_interaction"' in primary_sql
    shortlist_read = 'FROM "accounts_profile" p JOIN'
    assert shortlist_read in primary_sql and shortlist_read not in replica_sql

    replicate()
    cache.clear()  # her cached page has expired
    body = _recommend(client_for, scene.viewer)

    assert late.pk in _ids(body)
    assert liked.pk not in _ids(body) and hiding.pk not in _ids(body)


@pytest.mark.django_db(transaction=True, databases=BOTH)
def test_an_unreachable_replica_hands_its_reads_to_the_primary(replica, client_for):
    scene = scene_build(fillers=4)
    replica_settings = connections[REPLICA].settings_dict
    real_name = replica_settings["NAME"]
    connections[REPLICA].close()
    replica_settings["NAME"] = f"{real_name}_gone"  # connecting now fails
    try:
        body = _recommend(client_for, scene.viewer)
        health = client_for(scene.viewer).get("/health").json()
    finally:
        connections[REPLICA].close()
        replica_settings["NAME"] = real_name

    assert {scene.tempting.pk, *(o.pk for o in scene.others)} <= _ids(body)
    # Served from a member store read on the primary, not the random fallback of
    # a store that failed to load.
    assert body["strategy"] == "content_popularity"
    replica_health = health["components"]["database_replica"]
    assert replica_health["status"] == "degraded"
    assert "reads go to the primary" in replica_health["error"]
    assert "database_replica" in health["problems"]


@pytest.mark.django_db(transaction=True, databases=BOTH)
def test_health_reports_a_working_replica(replica, client):
    health = client.get("/health").json()

    replica_health = health["components"]["database_replica"]
    assert replica_health["status"] == "ok"
    assert replica_health["reads"] == "replica"
    assert "database_replica" not in health["problems"]
