"""A change of mind is dated when it happened and the verdict it replaced is kept,
so training data cut at any time holds each pair's verdict as it stood then."""

import datetime as dt

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from interactions.models import Interaction, InteractionHistory, InteractionKind
from recommender import data
from recommender.evaluation import evaluation_data_load
from recommender.ml.cut import cut_state, time_split
from recommender.ml.data import KIND_CODES
from recommender.services.runs import run_data_load, training_run_start
from tests.accounts.factories import member

pytestmark = pytest.mark.django_db

INTERACTIONS_URL = "/api/v1/interactions/"


@pytest.fixture
def alice():
    return member(display_name="Alice")


@pytest.fixture
def bob():
    return member(display_name="Bob")


@pytest.fixture
def post(client_for):
    def send(actor, target, kind, **extra):
        body = {"target": target.pk, "kind": kind, **extra}
        return client_for(actor).post(INTERACTIONS_URL, body, format="json")

    return send


def _verdicts(loaded, actor, target) -> list[tuple[int, float]]:
    """(kind code, ts) of every loaded row of the pair."""
    return [
        (int(kind), float(ts))
        for a, t, kind, ts in zip(
            loaded.actor, loaded.target, loaded.kind, loaded.ts, strict=True
        )
        if (a, t) == (actor.pk, target.pk)
    ]


def _liked_an_hour_ago(post, alice, bob) -> dt.datetime:
    """Alice likes Bob through the API; the like is then moved an hour back, as if
    she had given it then."""
    assert post(alice, bob, "like", context={"source": "recs"}).status_code == 201
    liked_at = timezone.now() - dt.timedelta(hours=1)
    Interaction.objects.filter(actor=alice, target=bob).update(
        created_at=liked_at, updated_at=liked_at
    )
    return liked_at


def test_a_pass_after_a_like_is_dated_at_the_change_and_keeps_the_like(
    post, alice, bob
):
    liked_at = _liked_an_hour_ago(post, alice, bob)
    before_pass = timezone.now()

    response = post(alice, bob, "dislike", context={"source": "profile"})

    assert response.status_code == 200, response.content
    current = Interaction.objects.get(actor=alice, target=bob)
    assert current.kind == InteractionKind.DISLIKE
    assert current.created_at >= before_pass
    shown = dt.datetime.fromisoformat(response.json()["created_at"])
    assert shown == current.created_at
    [earlier] = InteractionHistory.objects.filter(interaction=current)
    assert earlier.kind == InteractionKind.LIKE
    assert earlier.context == {"source": "recs"}
    assert earlier.created_at == liked_at
    assert earlier.replaced_at == current.created_at


def test_the_training_loader_sees_each_verdict_as_of_its_cut(post, alice, bob):
    liked_at = _liked_an_hour_ago(post, alice, bob)
    assert post(alice, bob, "dislike").status_code == 200
    passed_at = Interaction.objects.get(actor=alice, target=bob).created_at
    between = liked_at + dt.timedelta(minutes=30)

    now = data.interactions_load()
    at_the_cut = data.interactions_load(created_before=between)
    before_both = data.interactions_load(created_before=liked_at)
    at_the_change = data.interactions_load(created_before=passed_at)

    assert _verdicts(now, alice, bob) == [
        (KIND_CODES["dislike"], passed_at.timestamp())
    ]
    assert _verdicts(at_the_cut, alice, bob) == [
        (KIND_CODES["like"], liked_at.timestamp())
    ]
    assert _verdicts(before_both, alice, bob) == []
    # Strictly before the cut: the pass made at that very instant is not seen yet.
    assert _verdicts(at_the_change, alice, bob) == [
        (KIND_CODES["like"], liked_at.timestamp())
    ]


def test_every_change_of_mind_is_kept_in_order(post, alice, bob):
    for kind in ("like", "dislike", "super_like", "block"):
        assert post(alice, bob, kind).status_code in (200, 201)

    current = Interaction.objects.get(actor=alice, target=bob)
    history = list(current.history.order_by("created_at", "id"))
    assert current.kind == InteractionKind.BLOCK
    assert [row.kind for row in history] == ["like", "dislike", "super_like"]
    for earlier, later in zip(history, history[1:], strict=False):
        assert earlier.replaced_at == later.created_at
    assert history[-1].replaced_at == current.created_at
    assert data.interactions_load().m == 1


def test_repeating_a_verdict_keeps_its_date_and_adds_no_history(post, alice, bob):
    liked_at = _liked_an_hour_ago(post, alice, bob)

    response = post(alice, bob, "like", context={"source": "profile"})

    assert response.status_code == 200
    current = Interaction.objects.get(actor=alice, target=bob)
    assert current.created_at == liked_at
    assert current.context == {"source": "profile"}
    assert not InteractionHistory.objects.exists()
    assert _verdicts(data.interactions_load(), alice, bob) == [
        (KIND_CODES["like"], liked_at.timestamp())
    ]


def test_a_verdict_dated_ahead_of_the_clock_is_replaced_in_order(post, alice, bob):
    """An imported row may carry a time ahead of this server's clock: the change
    is dated no earlier than the verdict it replaces."""
    assert post(alice, bob, "like").status_code == 201
    ahead = timezone.now() + dt.timedelta(minutes=5)
    Interaction.objects.filter(actor=alice, target=bob).update(created_at=ahead)

    assert post(alice, bob, "dislike").status_code == 200

    earlier = InteractionHistory.objects.get()
    assert earlier.created_at == earlier.replaced_at == ahead
    assert Interaction.objects.get(actor=alice, target=bob).created_at == ahead


def _given(loaded) -> list[tuple[int, int, int, float]]:
    """(actor, target, kind, ts) of every loaded row, sorted."""
    return sorted(
        zip(
            loaded.actor.tolist(),
            loaded.target.tolist(),
            loaded.kind.tolist(),
            loaded.ts.tolist(),
            strict=True,
        )
    )


def _rows(loaded) -> list[tuple[int, int, int, float, float]]:
    """(actor, target, kind, ts, until) of every loaded row, sorted."""
    return sorted(
        zip(
            loaded.actor.tolist(),
            loaded.target.tolist(),
            loaded.kind.tolist(),
            loaded.ts.tolist(),
            loaded.until.tolist(),
            strict=True,
        )
    )


def test_the_loader_with_history_gives_each_verdict_with_its_replacement_time(
    post, alice, bob
):
    liked_at = _liked_an_hour_ago(post, alice, bob)
    assert post(alice, bob, "dislike").status_code == 200
    passed_at = Interaction.objects.get(actor=alice, target=bob).created_at
    between = liked_at + dt.timedelta(minutes=30)
    like, dislike = KIND_CODES["like"], KIND_CODES["dislike"]

    everything = data.interactions_load(with_history=True)
    at_the_cut = data.interactions_load(created_before=between, with_history=True)
    later = data.interactions_load(
        created_before=passed_at + dt.timedelta(seconds=1), with_history=True
    )

    assert _rows(everything) == [
        (alice.pk, bob.pk, like, liked_at.timestamp(), passed_at.timestamp()),
        (alice.pk, bob.pk, dislike, passed_at.timestamp(), np.inf),
    ]
    assert _rows(later) == _rows(everything)
    # At a cut before the change, the like is all there was and it stood.
    assert _rows(at_the_cut) == [(alice.pk, bob.pk, like, liked_at.timestamp(), np.inf)]
    assert _verdicts(everything.before(between.timestamp()), alice, bob) == [
        (like, liked_at.timestamp())
    ]
    assert _verdicts(everything.current(), alice, bob) == [
        (dislike, passed_at.timestamp())
    ]
    assert data.interactions_load().until is None
    # manage.py evaluate's loader keeps the history too.
    _, evaluated = evaluation_data_load()
    assert _rows(evaluated) == _rows(everything)


@pytest.mark.postgres
def test_the_copy_and_orm_loaders_agree_on_a_history(post, alice, bob):
    if connection.vendor != "postgresql":
        pytest.skip("COPY needs PostgreSQL")
    carol = member(display_name="Carol")
    _liked_an_hour_ago(post, alice, bob)
    for kind in ("dislike", "super_like"):
        assert post(alice, bob, kind).status_code == 200
    assert post(carol, alice, "like").status_code == 201
    assert post(bob, carol, "dislike").status_code == 201
    times = sorted(
        [row.replaced_at for row in InteractionHistory.objects.all()]
        + list(Interaction.objects.values_list("created_at", flat=True))
    )
    cuts = [None, *times, times[0] + (times[-1] - times[0]) / 2]

    for cut in cuts:
        for with_history in (False, True):
            copied = data._interactions_copy(cut, with_history=with_history)
            fetched = data._interactions_orm(cut, with_history=with_history)
            assert _given(copied) == _given(fetched), (cut, with_history)
            if with_history:
                assert _rows(copied) == _rows(fetched), cut
            else:
                assert copied.until is None and fetched.until is None


def test_a_training_run_splits_on_the_verdict_each_cut_saw(post, alice, bob):
    """Alice likes Bob first and passes on him last, after the run's holdout cut:
    the training history and the state at the label cut hold her like, the
    holdout labels her pass."""
    others = [member(display_name=f"Member {i}") for i in range(6)]
    liked_at = _liked_an_hour_ago(post, alice, bob)
    for i, actor in enumerate(others):
        for target in others[i + 1 : i + 5]:
            assert post(actor, target, "like").status_code == 201
    # The others' likes spread after Alice's, so she gave the earliest verdict.
    for minute, interaction in enumerate(
        Interaction.objects.exclude(actor=alice).order_by("id"), start=1
    ):
        interaction.created_at = liked_at + dt.timedelta(minutes=minute)
        interaction.save(update_fields=["created_at"])
    assert post(alice, bob, "dislike").status_code == 200
    passed_at = Interaction.objects.get(actor=alice, target=bob).created_at
    like, dislike = KIND_CODES["like"], KIND_CODES["dislike"]

    run = training_run_start(trigger="cli")
    loaded = run_data_load(run=run)
    split = time_split(loaded.interactions)
    state = cut_state(
        loaded.members,
        split.history_for_training,
        split.t_label,
        {"dim": 4, "seed": 0},
        index="none",
    )

    assert liked_at.timestamp() < split.t_label < split.t_holdout
    assert split.t_holdout <= passed_at.timestamp()
    assert _verdicts(split.history_for_training, alice, bob) == [
        (like, liked_at.timestamp())
    ]
    assert _verdicts(split.history_for_holdout, alice, bob) == [
        (like, liked_at.timestamp())
    ]
    assert _verdicts(split.holdout_labels, alice, bob) == [
        (dislike, passed_at.timestamp())
    ]
    seen_by_alice = state.history.of(alice.pk)
    assert _verdicts(seen_by_alice, alice, bob) == [(like, liked_at.timestamp())]
    store = state.population.store
    assert store.likes_received[store.index_of(np.array([bob.pk]))[0]] == 1
    # The run's counts are of the current verdicts: one per pair.
    assert loaded.interactions.current().m == Interaction.objects.count()
