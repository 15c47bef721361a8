"""Writes of the interactions app: recording verdicts and keeping matches in step."""

import json
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone
from rest_framework import exceptions

from accounts.models import Profile, User
from accounts.services import profile_touch
from config.api import ApplicationError
from interactions.matching import match_is_mutual, match_pair, match_time
from interactions.models import (
    POSITIVE_KINDS,
    Interaction,
    InteractionHistory,
    InteractionKind,
    Match,
    MatchEndReason,
)
from recommender.cache import recommendations_cache_invalidate
from recommender.selectors import impression_get_latest

MAX_CONTEXT_BYTES = 4096
# The same words for "no such member" and "this member blocked you", so a block
# is never revealed to the blocked member.
UNKNOWN_TARGET = "No active member with this id."


@dataclass(frozen=True)
class InteractionRecorded:
    interaction: Interaction
    created: bool
    matched: bool


def _has_unstorable_text(value: Any) -> bool:
    """Whether a JSON value holds text PostgreSQL's jsonb refuses: NUL (``\\u0000``)
    or a lone UTF-16 surrogate (``\\ud800``), in a key or a string. Iterative, so
    deeply nested input cannot exhaust the stack."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item or any("\ud800" <= char <= "\udfff" for char in item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _validate_context(context: Any) -> dict:
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise ApplicationError("Must be a JSON object.", field="context")
    try:
        size = len(json.dumps(context, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        raise ApplicationError("Must be a JSON object.", field="context") from None
    if _has_unstorable_text(context):
        raise ApplicationError(
            "Text must not contain NUL characters or unpaired surrogates.",
            field="context",
        )
    if size > MAX_CONTEXT_BYTES:
        raise ApplicationError(
            f"Must be at most {MAX_CONTEXT_BYTES} bytes of JSON.", field="context"
        )
    return context


IMPRESSION_CONTEXT_KEYS = ("request_id", "experiment", "arm", "source", "position")


def _context_with_impression(*, actor_id: int, target_id: int, context: dict) -> dict:
    """The context, completed from the latest time the actor was shown the target.

    Keys the client sent are kept. When it sent a ``request_id``, that request's
    impression is used (so the keys added describe the response it acted on). This
    is what lets the A/B report and position-bias features read an interaction's
    experiment arm, source and position.
    """
    if all(key in context for key in IMPRESSION_CONTEXT_KEYS):
        return context
    request_id = context.get("request_id")
    impression = impression_get_latest(
        user_id=actor_id,
        shown_user_id=target_id,
        request_id=request_id if isinstance(request_id, str) else None,
    )
    if impression is None:
        return context
    experiment, _, arm = impression.experiment.rpartition(":")
    found = {
        "request_id": impression.request_id,
        "experiment": experiment,
        "arm": arm if experiment else "",
        "source": impression.sources[0] if impression.sources else "",
        "position": impression.position,
    }
    return {**found, **context}


def _lock_pair(*, actor_id: int, target_id: int) -> dict[int, User]:
    """Lock both members' rows, in ascending id order so that two requests about the
    same pair (in either direction) queue up instead of deadlocking.

    ``no_key`` keeps the lock compatible with the key-share locks that inserting
    rows referencing these users takes.
    """
    users = (
        User.objects.select_for_update(no_key=True)
        .filter(pk__in=[actor_id, target_id])
        .order_by("pk")
    )
    return {user.pk: user for user in users}


def _match_sync(*, actor: User, target: User, kind: str) -> bool:
    """Create, reopen or end the pair's match after ``actor``'s new verdict; return
    whether the pair is matched now. The caller holds the pair's locks."""
    low_id, high_id = match_pair(actor.pk, target.pk)
    match = Match.objects.filter(user_low_id=low_id, user_high_id=high_id).first()
    now = timezone.now()
    if kind in POSITIVE_KINDS:
        back = (
            Interaction.objects.filter(actor=target, target=actor)
            .values_list("kind", "created_at")
            .first()
        )
        if back is None or not match_is_mutual(kind, back[0]):
            return False
        matched_at = match_time(now, back[1])
        if match is None:
            Match.objects.create(
                user_low_id=low_id, user_high_id=high_id, matched_at=matched_at
            )
        elif not match.is_active:
            match.matched_at, match.ended_at, match.end_reason = matched_at, None, ""
            match.save(update_fields=["matched_at", "ended_at", "end_reason"])
        return True
    if match is not None and match.is_active:
        match.ended_at = now
        match.end_reason = (
            MatchEndReason.BLOCK
            if kind == InteractionKind.BLOCK
            else MatchEndReason.UNLIKE
        )
        match.save(update_fields=["ended_at", "end_reason"])
    return False


def _verdict_change(*, interaction: Interaction, kind: str, context: dict) -> None:
    """Update the pair's row with the actor's new verdict. Another kind is a change
    of mind: the replaced verdict goes to ``InteractionHistory`` and the row is
    re-dated now, so training never sees the new verdict before it was made nor
    loses the old one at an earlier cut. The same kind again keeps its date."""
    update_fields = ["kind", "context", "updated_at"]
    if kind != interaction.kind:
        # Never before the verdict it replaces (an imported row may be dated ahead
        # of this clock): the history's periods stay in order.
        now = max(timezone.now(), interaction.created_at)
        InteractionHistory.objects.create(
            interaction=interaction,
            kind=interaction.kind,
            context=interaction.context,
            created_at=interaction.created_at,
            replaced_at=now,
        )
        interaction.created_at = now
        update_fields.append("created_at")
    interaction.kind, interaction.context = kind, context
    interaction.save(update_fields=update_fields)


@transaction.atomic
def interaction_record(
    *, actor: User, target_id: int, kind: str, context: dict | None = None
) -> InteractionRecorded:
    """Record ``actor``'s verdict on ``target_id``: one row per pair, updated (and
    re-dated, the earlier verdict kept as history) when the member changes their
    mind.

    A mutual like or super like creates the pair's match (or reopens an ended one); a
    dislike or a block ends an active match. Both members' rows are locked for the
    duration, so simultaneous requests about the same pair are applied one after the
    other: exactly one row, exactly one match. Raises ``ApplicationError`` naming the
    field for an unknown kind, oneself, an unknown, inactive or hidden target, a
    target who blocked the actor (both reported exactly like an unknown target) or
    a bad context.
    """
    if kind not in InteractionKind.values:
        choices = ", ".join(InteractionKind.values)
        raise ApplicationError(f"Must be one of: {choices}.", field="kind")
    if target_id == actor.pk:
        raise ApplicationError("You cannot interact with yourself.", field="target")
    context = _validate_context(context)

    users = _lock_pair(actor_id=actor.pk, target_id=target_id)
    if actor.pk not in users:
        # Deleted (DELETE /api/v1/accounts/me/) while this request waited for the
        # lock: its rows could not be stored any more.
        raise exceptions.AuthenticationFailed("This account no longer exists.")
    target = users.get(target_id)
    # Only visible members can be acted on: not staff-only accounts (no profile),
    # not a member who hid their profile, and the answer is the one for an id that
    # names nobody, so hiding cannot be told apart from not existing.
    if (
        target is None
        or not target.is_active
        or not Profile.objects.filter(pk=target_id, is_visible=True).exists()
    ):
        raise ApplicationError(UNKNOWN_TARGET, field="target")
    blocked_by_target = Interaction.objects.filter(
        actor=target, target=actor, kind=InteractionKind.BLOCK
    ).exists()
    if blocked_by_target:
        raise ApplicationError(UNKNOWN_TARGET, field="target")
    context = _context_with_impression(
        actor_id=actor.pk, target_id=target.pk, context=context
    )

    interaction = Interaction.objects.filter(actor=actor, target=target).first()
    created = interaction is None
    if created:
        interaction = Interaction.objects.create(
            actor=actor, target=target, kind=kind, context=context
        )
    else:
        _verdict_change(interaction=interaction, kind=kind, context=context)

    matched = _match_sync(actor=actor, target=target, kind=kind)
    profile_touch(user_id=actor.pk)

    transaction.on_commit(lambda: recommendations_cache_invalidate(user_id=actor.pk))
    if kind == InteractionKind.BLOCK:
        # The blocked member must stop being shown the blocker right away.
        transaction.on_commit(
            lambda: recommendations_cache_invalidate(user_id=target.pk)
        )
    return InteractionRecorded(
        interaction=interaction, created=created, matched=matched
    )
