"""Concurrency on real PostgreSQL through the real HTTP stack.

``tests/interactions/test_services.py`` and ``tests/registry/test_concurrency.py``
race the services on threads; here parallel clients go through gunicorn (two worker
processes x four threads, so requests really overlap in separate processes) and
through the admin, and the database is checked afterwards.
"""

import itertools
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth.models import Permission
from django.db import connections
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token

from interactions.models import POSITIVE_KINDS, Interaction, Match
from registry.models import ActivationAction, MLModel, ModelActivation, ModelKind
from registry.services import model_activate
from tests.accounts.factories import UserFactory, member
from tests.registry.factories import versions

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLIENTS = 16
MEMBERS = 6
REPEATS = 3  # each ordered pair is posted this many times, by different clients


@pytest.fixture
def server(postgres, own_redis, web):
    # Real throttling (on our own Redis) with a limit these tests do not reach.
    redis = own_redis()
    return web(REDIS_URL=redis.url, THROTTLE_INTERACTIONS="100000/minute")


def post_all(server, posts):
    """POST every (token, body) from CLIENTS threads at once; (body, reply) pairs."""
    start = threading.Barrier(CLIENTS)

    def client(batch):
        start.wait()
        return [
            (
                body,
                server.request(
                    "POST", "/api/v1/interactions/", token=token, json_body=body
                ),
            )
            for token, body in batch
        ]

    batches = [posts[n::CLIENTS] for n in range(CLIENTS)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        return [pair for done in pool.map(client, batches) for pair in done]


def test_parallel_likes_give_one_row_per_pair_and_one_match_per_mutual_pair(server):
    members = [member() for _ in range(MEMBERS)]
    tokens = {m.pk: Token.objects.create(user=m).key for m in members}
    ordered_pairs = list(itertools.permutations(members, 2))
    posts = [
        (tokens[actor.pk], {"target": target.pk, "kind": kind})
        for actor, target in ordered_pairs
        for kind in ("like", "super_like", "like")[:REPEATS]
    ]
    random.Random(8).shuffle(posts)

    replies = post_all(server, posts)

    statuses = Counter(reply.status for _, reply in replies)
    assert set(statuses) <= {200, 201}, statuses
    created = Counter(
        (body["target"], reply.json()["id"])
        for body, reply in replies
        if reply.status == 201
    )
    # Exactly one "created" per ordered pair, every other post an update.
    assert statuses[201] == len(ordered_pairs) == len(created)
    assert Interaction.objects.count() == len(ordered_pairs)
    unordered = len(ordered_pairs) // 2
    assert Match.objects.count() == unordered
    assert Match.objects.filter(ended_at__isnull=True).count() == unordered


def test_racing_changes_of_mind_leave_matches_consistent_with_the_final_verdicts(
    server,
):
    """Both sides of each pair flip between like and dislike at the same time: no
    update is lost, so a pair is matched exactly when both final verdicts are
    positive."""
    members = [member() for _ in range(MEMBERS)]
    tokens = {m.pk: Token.objects.create(user=m).key for m in members}
    rng = random.Random(88)
    posts = [
        (tokens[actor.pk], {"target": target.pk, "kind": rng.choice(kinds)})
        for actor, target in itertools.permutations(members, 2)
        for kinds in (("like", "dislike", "super_like"),) * 4
    ]
    rng.shuffle(posts)

    replies = post_all(server, posts)

    assert {reply.status for _, reply in replies} <= {200, 201}
    final = {
        (row.actor_id, row.target_id): row.kind for row in Interaction.objects.all()
    }
    assert len(final) == MEMBERS * (MEMBERS - 1)
    for low, high in itertools.combinations(sorted(m.pk for m in members), 2):
        both_positive = (
            final[(low, high)] in POSITIVE_KINDS
            and final[(high, low)] in POSITIVE_KINDS
        )
        matches = Match.objects.filter(user_low_id=low, user_high_id=high)
        assert matches.count() <= 1
        active = matches.filter(ended_at__isnull=True).exists()
        assert active == both_positive, (
            low,
            high,
            final[(low, high)],
            final[(high, low)],
        )


def promoter():
    """A staff member (not a superuser) with the registry's promote permission."""
    user = UserFactory(is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="registry",
            codename__in=["view_mlmodel", "change_mlmodel", "promote_mlmodel"],
        )
    )
    return user


def test_two_admins_promoting_different_versions_at_once(postgres):
    changelist = reverse("admin:registry_mlmodel_changelist")
    admins = [promoter(), promoter()]
    rounds = 5
    models = versions(count=1 + 2 * rounds)
    model_activate(model=models[0], actor=None)

    def promote(admin, model):
        client = Client()
        client.force_login(admin)
        barrier.wait()
        try:
            return client.post(
                changelist,
                {"action": "promote_selected_version", "_selected_action": [model.pk]},
            ).status_code
        finally:
            connections.close_all()

    for n in range(rounds):
        a, b = models[1 + 2 * n], models[2 + 2 * n]
        barrier = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            codes = list(pool.map(promote, admins, (a, b)))
        assert codes == [302, 302]  # the action's redirect back to the changelist

        active = MLModel.objects.filter(kind=ModelKind.RANKING, is_active=True)
        assert active.count() == 1
        latest = ModelActivation.objects.filter(action=ActivationAction.PROMOTE)
        first, second = latest.order_by("-id")[:2][::-1]
        # Both attempts are in the audit log, by their admins, as one chain.
        assert {first.actor_id, second.actor_id} == {admin.pk for admin in admins}
        assert {first.to_model_id, second.to_model_id} == {a.pk, b.pk}
        assert second.from_model_id == first.to_model_id
        assert active.get().pk == second.to_model_id
    assert ModelActivation.objects.count() == 1 + 2 * rounds
