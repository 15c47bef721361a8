"""Reads of the accounts app."""

import datetime as dt

from django.conf import settings
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.models import Profile, User
from interactions.selectors import block_exists_between

# Ids are 64-bit; a larger number in a URL names nobody (and SQLite cannot bind it).
MAX_USER_ID = 2**63 - 1


def profile_get_own(*, user: User) -> Profile | None:
    """The member's own profile with their preferences, or None (e.g. staff)."""
    profile = Profile.objects.filter(user=user).first()
    if profile is not None:
        profile.user = user
    return profile


def profile_get_public(*, viewer: User, user_id: int) -> Profile | None:
    """The profile ``viewer`` may see for ``user_id``, or None.

    None when the member does not exist, is inactive or hidden, or when either of the
    two has blocked the other: the caller cannot tell these cases apart. A member can
    always see their own profile.
    """
    if not 0 < user_id <= MAX_USER_ID:
        return None
    profile = (
        Profile.objects.select_related("user")
        .filter(user_id=user_id, user__is_active=True)
        .first()
    )
    if profile is None:
        return None
    if profile.user_id == viewer.pk:
        return profile
    if not profile.is_visible:
        return None
    if block_exists_between(user_id=viewer.pk, other_id=profile.user_id):
        return None
    return profile


def auth_token_is_current(*, token: Token) -> bool:
    """Whether ``token`` may still authenticate: issued within the token lifetime
    (``KINDRED["AUTH_TOKEN_TTL_HOURS"]``, 0 for no limit) and not before its
    member's latest password change. Reads ``token.user`` as loaded with it."""
    hours = settings.KINDRED["AUTH_TOKEN_TTL_HOURS"]
    if hours and token.created < timezone.now() - dt.timedelta(hours=hours):
        return False
    changed = token.user.password_changed_at
    return changed is None or token.created >= changed
