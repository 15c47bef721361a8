"""Reads of the interactions app."""

from django.db.models import Q, QuerySet

from accounts.models import User
from interactions.models import Interaction, InteractionKind, Match


def block_exists_between(*, user_id: int, other_id: int) -> bool:
    """Whether either member has blocked the other."""
    return Interaction.objects.filter(
        Q(actor_id=user_id, target_id=other_id)
        | Q(actor_id=other_id, target_id=user_id),
        kind=InteractionKind.BLOCK,
    ).exists()


def interaction_list_given(
    *, actor: User, kind: str | None = None
) -> QuerySet[Interaction]:
    """The member's own interactions, most recently changed first, optionally of
    one kind."""
    interactions = Interaction.objects.filter(actor=actor)
    if kind:
        interactions = interactions.filter(kind=kind)
    return interactions.order_by("-updated_at", "-pk")


def match_list_active(*, user: User) -> QuerySet[Match]:
    """The member's active matches with members who are active and visible, newest
    first.

    A match with someone who hid their profile (or was deactivated) is left out
    while they are, as their profile is; it is back when they show it again. Both
    sides' profiles are fetched with the matches, so listing them costs one query
    per page.
    """
    return (
        Match.objects.filter(
            Q(
                user_low=user,
                user_high__is_active=True,
                user_high__profile__is_visible=True,
            )
            | Q(
                user_high=user,
                user_low__is_active=True,
                user_low__profile__is_visible=True,
            ),
            ended_at__isnull=True,
        )
        .select_related("user_low__profile", "user_high__profile")
        .order_by("-matched_at", "-pk")
    )
