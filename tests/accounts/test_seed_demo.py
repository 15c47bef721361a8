import datetime as dt
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import F
from django.utils import timezone

from accounts import demo
from accounts.demo import DEMO_PASSWORD, demo_members, demo_seed
from accounts.models import Preferences, Profile, User
from interactions.models import Interaction, InteractionKind, Match
from recommender.ml import synthetic
from tests.accounts.factories import member

pytestmark = pytest.mark.django_db

USERS = 300
SEED = 11
TOKEN_URL = "/api/v1/auth/token/"


def _seed(*args: str) -> str:
    out = StringIO()
    call_command(
        "seed_demo", "--users", str(USERS), "--seed", str(SEED), *args, stdout=out
    )
    return out.getvalue()


def _expected():
    return synthetic.generate_dataset(n_members=USERS, seed=SEED)


def _snapshot() -> dict:
    return {
        "users": sorted(demo_members().values_list("pk", "username")),
        "profiles": Profile.objects.count(),
        "preferences": Preferences.objects.count(),
        "interactions": sorted(
            Interaction.objects.values_list("actor_id", "target_id", "kind")
        ),
        "matches": sorted(
            Match.objects.values_list("user_low_id", "user_high_id", "matched_at")
        ),
    }


def test_command_writes_the_generated_population():
    output = _seed()
    expected = _expected()
    counts = expected.interactions.count_by_kind()

    assert demo_members().count() == USERS
    assert Profile.objects.filter(user__in=demo_members()).count() == USERS
    assert Preferences.objects.filter(user__in=demo_members()).count() == USERS
    assert Interaction.objects.count() == expected.interactions.m
    for kind in InteractionKind:
        assert Interaction.objects.filter(kind=kind).count() == counts[kind.value]
    assert f"seeded {USERS:,} demo members" in output
    assert DEMO_PASSWORD in output


def test_rows_carry_the_generated_values():
    _seed()
    expected = _expected()
    members = expected.members
    ids = dict(demo_members().values_list("username", "pk"))
    index_of = {pk: int(name.removeprefix("demo_")) - 1 for name, pk in ids.items()}

    first = Profile.objects.get(user__username="demo_00001")
    assert first.display_name == synthetic.display_names(members)[0]
    assert first.gender == synthetic.GENDERS[members.gender[0]]
    assert first.age == members.age_years[0]
    assert first.interests == synthetic.interest_lists(members)[0]
    assert first.city == synthetic.CITIES[members.city[0]].name

    stored = {
        (index_of[a], index_of[t]): kind
        for a, t, kind in Interaction.objects.values_list("actor", "target", "kind")
    }
    generated = {
        (int(a), int(t)): synthetic.KINDS[k]
        for a, t, k in zip(
            expected.interactions.actor,
            expected.interactions.target,
            expected.interactions.kind,
            strict=True,
        )
    }
    assert stored == generated


def test_timestamps_spread_over_the_window_in_generated_order():
    _seed()
    now = timezone.now()
    joined = list(Profile.objects.values_list("created_at", flat=True))
    times = list(
        Interaction.objects.order_by("created_at").values_list("created_at", flat=True)
    )

    assert min(joined) > now - dt.timedelta(days=181)
    assert max(joined) - min(joined) > dt.timedelta(days=90)
    assert times[0] >= min(joined)
    assert times[-1] <= now
    assert times[-1] - times[0] > dt.timedelta(days=60)
    # Every profile is dated by its member's join, not by the write.
    assert not Profile.objects.exclude(created_at=F("user__date_joined")).exists()
    assert not Profile.objects.exclude(updated_at=F("user__date_joined")).exists()
    assert not Profile.objects.filter(last_active_at__lt=F("created_at")).exists()


def test_matches_are_exactly_the_mutual_positive_pairs():
    _seed()
    expected = _expected()
    pairs = synthetic.mutual_positive_pairs(expected.interactions, USERS)
    usernames = dict(demo_members().values_list("pk", "username"))

    stored = {
        (
            int(usernames[low].removeprefix("demo_")) - 1,
            int(usernames[high].removeprefix("demo_")) - 1,
        )
        for low, high in Match.objects.values_list("user_low", "user_high")
    }
    generated = set(zip(pairs.low.tolist(), pairs.high.tolist(), strict=True))
    assert len(generated) > 10
    assert stored == generated
    assert not Match.objects.filter(ended_at__isnull=False).exists()
    # Every matched_at: the later of the pair's two positive verdicts.
    verdict_at = {
        (actor, target): at
        for actor, target, at in Interaction.objects.values_list(
            "actor_id", "target_id", "created_at"
        )
    }
    for low, high, matched_at in Match.objects.values_list(
        "user_low_id", "user_high_id", "matched_at"
    ):
        assert matched_at == max(verdict_at[low, high], verdict_at[high, low])


def test_second_run_without_flush_changes_nothing():
    _seed()
    before = _snapshot()

    output = _seed()

    assert f"demo data present: {USERS:,} members; use --flush to regenerate" in output
    assert _snapshot() == before


def test_flush_regenerates_and_keeps_real_members():
    _seed()
    old_ids = set(demo_members().values_list("pk", flat=True))
    real = member()
    target = demo_members().first()
    Interaction.objects.create(actor=real, target=target, kind=InteractionKind.LIKE)

    output = _seed("--flush")

    new_ids = set(demo_members().values_list("pk", flat=True))
    assert f"flushed {USERS:,} demo members" in output
    assert len(new_ids) == USERS and not new_ids & old_ids
    assert Interaction.objects.count() == _expected().interactions.m
    assert User.objects.filter(pk=real.pk).exists()
    assert Profile.objects.count() == USERS + 1


def test_a_seeded_member_can_log_in_with_the_demo_password(api_client):
    _seed()

    response = api_client.post(
        TOKEN_URL, {"username": "demo_00042", "password": DEMO_PASSWORD}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["token"]


def test_all_members_share_one_password_hash():
    _seed()

    assert demo_members().values("password").distinct().count() == 1


def test_a_failure_leaves_nothing_half_seeded(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "_insert_matches", broken)

    with pytest.raises(RuntimeError):
        demo_seed(users=50, seed=1)

    assert not User.objects.exists()
    assert not Profile.objects.exists()
    assert not Interaction.objects.exists()


def test_service_reports_progress_and_summary():
    reports = []

    summary = demo_seed(
        users=120, seed=2, interactions_per_user=5, progress=reports.append
    )

    stages = [report.stage for report in reports]
    for stage in ("generate", "users", "profiles", "preferences", "interactions"):
        assert stage in stages
    assert summary.members == 120
    assert summary.interactions == Interaction.objects.count()
    assert summary.matches == Match.objects.count()
    assert not summary.skipped
    assert np.isclose(summary.interactions / 120, 5, rtol=0.3)


@pytest.mark.parametrize("args", [["--users", "0"], ["--users", "-3"]])
def test_invalid_arguments_are_refused(args):
    with pytest.raises(CommandError, match="users"):
        call_command("seed_demo", *args, stdout=StringIO())

    assert not User.objects.exists()
