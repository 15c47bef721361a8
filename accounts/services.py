"""Writes of the accounts app: sign-up, log-in tokens, profile and preferences."""

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import check_password
from django.contrib.auth.password_validation import validate_password
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authtoken.models import Token

from accounts.models import (
    AccountDeletion,
    DeletionRequester,
    Gender,
    Preferences,
    Profile,
    User,
    age_on,
)
from accounts.selectors import auth_token_is_current
from config.api import ApplicationError
from recommender.cache import recommendations_cache_invalidate

logger = logging.getLogger(__name__)

MINIMUM_AGE = 18
MAXIMUM_AGE = 120
MAX_INTERESTS = 30
# last_active_at is a recency signal, not an audit trail: one write per window is
# enough and keeps frequent requests from rewriting the row.
ACTIVITY_RESOLUTION = dt.timedelta(minutes=5)

PROFILE_FIELDS = frozenset(
    {
        "display_name",
        "birth_date",
        "gender",
        "city",
        "latitude",
        "longitude",
        "bio",
        "interests",
        "is_visible",
    }
)
PREFERENCES_FIELDS = frozenset(
    {"seeking_genders", "min_age", "max_age", "max_distance_km"}
)


def interests_normalize(*, interests: Iterable[str]) -> list[str]:
    """Lower-case, trim and deduplicate interests, keeping their first order.

    Raises ``ApplicationError`` (field ``interests``) beyond ``MAX_INTERESTS`` items.
    """
    normalized: list[str] = []
    for interest in interests:
        value = " ".join(str(interest).split()).lower()
        if value and value not in normalized:
            normalized.append(value)
    if len(normalized) > MAX_INTERESTS:
        raise ApplicationError(
            f"At most {MAX_INTERESTS} distinct interests are allowed.",
            field="interests",
        )
    return normalized


def _validate_birth_date(birth_date: dt.date) -> None:
    today = timezone.localdate()
    if birth_date > today:
        raise ApplicationError("Must not be in the future.", field="birth_date")
    age = age_on(birth_date, today)
    if age < MINIMUM_AGE:
        raise ApplicationError(
            f"Members must be at least {MINIMUM_AGE} years old.", field="birth_date"
        )
    if age > MAXIMUM_AGE:
        raise ApplicationError("Is not a plausible birth date.", field="birth_date")


def _validate_profile(profile: Profile) -> None:
    _validate_birth_date(profile.birth_date)
    if profile.gender not in Gender.values:
        raise ApplicationError("Is not a valid choice.", field="gender")
    if (profile.latitude is None) != (profile.longitude is None):
        field = "longitude" if profile.longitude is None else "latitude"
        raise ApplicationError(
            "Latitude and longitude go together: give both or neither.", field=field
        )
    for field, limit in (("latitude", 90), ("longitude", 180)):
        value = getattr(profile, field)
        if value is not None and not -limit <= value <= limit:
            raise ApplicationError(
                f"Must be between -{limit} and {limit}.", field=field
            )


def _validate_preferences(preferences: Preferences) -> None:
    # Reported under "preferences", as the API nests these fields there.
    def invalid(field: str, message: str) -> ApplicationError:
        return ApplicationError(f"{field}: {message}", field="preferences")

    if not preferences.seeking_genders:
        raise invalid("seeking_genders", "Choose at least one gender.")
    unknown = set(preferences.seeking_genders) - set(Gender.values)
    if unknown:
        raise invalid("seeking_genders", f"Unknown: {', '.join(sorted(unknown))}.")
    for field in ("min_age", "max_age"):
        if not MINIMUM_AGE <= getattr(preferences, field) <= MAXIMUM_AGE:
            raise invalid(field, f"Must be between {MINIMUM_AGE} and {MAXIMUM_AGE}.")
    if preferences.min_age > preferences.max_age:
        raise invalid("max_age", "Must not be less than min_age.")
    if preferences.max_distance_km is not None and preferences.max_distance_km < 1:
        raise invalid("max_distance_km", "Must be at least 1 (null: any distance).")


def _apply(instance, fields: Mapping[str, Any], allowed: frozenset[str]) -> list[str]:
    unknown = set(fields) - allowed
    if unknown:
        raise ApplicationError(f"Unknown field(s): {', '.join(sorted(unknown))}.")
    for name, value in fields.items():
        setattr(instance, name, value)
    return list(fields)


def _dedupe(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


@transaction.atomic
def account_create(
    *,
    username: str,
    password: str,
    display_name: str,
    birth_date: dt.date,
    gender: str,
    city: str = "",
    latitude: float | None = None,
    longitude: float | None = None,
    bio: str = "",
    interests: Iterable[str] = (),
    preferences: Mapping[str, Any] | None = None,
) -> User:
    """Create a member: the user, their profile and their preferences, atomically.

    Preferences default to seeking every gender, ages 18-99, any distance. Raises
    ``ApplicationError`` naming the field for a taken username, a weak password, an
    under-age or future birth date, half a location or inconsistent preferences.
    """
    username = User.normalize_username(username)
    if User.objects.filter(username__iexact=username).exists():
        raise ApplicationError("This username is already taken.", field="username")

    user = User(username=username)
    try:
        validate_password(password, user=user)
    except DjangoValidationError as error:
        raise ApplicationError(" ".join(error.messages), field="password") from None
    user.set_password(password)

    profile = Profile(
        user=user,
        display_name=display_name,
        birth_date=birth_date,
        gender=gender,
        city=city,
        latitude=latitude,
        longitude=longitude,
        bio=bio,
        interests=interests_normalize(interests=interests),
        last_active_at=timezone.now(),
    )
    _validate_profile(profile)
    prefs = Preferences(user=user, seeking_genders=list(Gender.values))
    _apply(prefs, preferences or {}, PREFERENCES_FIELDS)
    prefs.seeking_genders = _dedupe(prefs.seeking_genders)
    _validate_preferences(prefs)

    try:
        # A savepoint, so a concurrent sign-up with the same name fails cleanly.
        with transaction.atomic():
            user.save()
    except IntegrityError:
        raise ApplicationError(
            "This username is already taken.", field="username"
        ) from None
    profile.user = user
    profile.save()
    prefs.user = user
    prefs.save()
    return user


def auth_token_obtain(*, username: str, password: str) -> str:
    """Return the API token of the member with these credentials: their current one,
    or a new one when they have none or it has expired or predates their latest
    password change.

    Raises ``ApplicationError`` for wrong credentials or an inactive account, without
    saying which part was wrong.
    """
    staff = User.objects.filter(
        Q(is_staff=True) | Q(is_superuser=True), username=username
    ).exists()
    if staff:
        login_lockout_check(username=username)
    user = authenticate(username=username, password=password)
    if user is None:
        if staff:
            login_failure_record(username=username)
        raise ApplicationError("Unable to log in with the provided credentials.")
    if staff:
        login_failures_clear(username=username)
    # The user as stored (not as authenticate() left it in memory: a password hash
    # upgrade on log-in sets a new hash, which is not a password change).
    current = Token.objects.select_related("user").filter(user=user).first()
    if current is not None and not auth_token_is_current(token=current):
        current.delete()
    # get_or_create retries the read when a parallel log-in created the token first.
    token, _ = Token.objects.get_or_create(user=user)
    profile_touch(user_id=user.pk)
    return token.key


def _login_failures_key(username: str) -> str:
    digest = hashlib.sha256(username.casefold().encode()).hexdigest()
    return f"login-failures:{digest}"


def login_lockout_check(*, username: str) -> None:
    """Raise ``Throttled`` (429, ``Retry-After``) while ``username`` has had
    ``KINDRED["LOGIN_MAX_FAILURES"]`` failed log-ins within the lockout period.

    The count lives in the cache; with the cache away it is not enforced (logged),
    like the throttles.
    """
    limits = settings.KINDRED
    try:
        failures = cache.get(_login_failures_key(username), 0)
    except Exception:  # noqa: BLE001 - any cache client error: fail open
        logger.warning("login failure count unavailable", exc_info=True)
        return
    if failures >= limits["LOGIN_MAX_FAILURES"]:
        raise exceptions.Throttled(
            wait=limits["LOGIN_LOCKOUT_SECONDS"],
            detail="Too many failed log-ins for this account; try again later.",
        )


def login_failure_record(*, username: str) -> None:
    """Count one failed log-in for ``username``; the count expires
    ``LOGIN_LOCKOUT_SECONDS`` after the latest failure."""
    key = _login_failures_key(username)
    seconds = settings.KINDRED["LOGIN_LOCKOUT_SECONDS"]
    try:
        cache.set(key, cache.get(key, 0) + 1, timeout=seconds)
    except Exception:  # noqa: BLE001 - any cache client error: fail open
        logger.warning("login failure not counted", exc_info=True)


def login_failures_clear(*, username: str) -> None:
    """Forget ``username``'s failed log-ins (after a successful one)."""
    try:
        cache.delete(_login_failures_key(username))
    except Exception:  # noqa: BLE001 - any cache client error: fail open
        logger.warning("login failures not cleared", exc_info=True)


def auth_token_revoke(*, user: User) -> None:
    """Log the member out of the API: their token stops working at once."""
    Token.objects.filter(user=user).delete()


def profile_touch(*, user_id: int) -> None:
    """Record that the member is active now (at most one write per few minutes)."""
    now = timezone.now()
    Profile.objects.filter(user_id=user_id).filter(
        Q(last_active_at__isnull=True) | Q(last_active_at__lt=now - ACTIVITY_RESOLUTION)
    ).update(last_active_at=now)


@transaction.atomic
def profile_update(
    *,
    user: User,
    profile_fields: Mapping[str, Any] | None = None,
    preferences_fields: Mapping[str, Any] | None = None,
) -> Profile:
    """Partially update the member's own profile and preferences.

    Both rows are locked, so the checks that span fields (min_age <= max_age, latitude
    with longitude) hold against concurrent updates. Raises ``ApplicationError``
    naming the field; the member's cached recommendations are dropped after commit.
    """
    profile_fields = dict(profile_fields or {})
    preferences_fields = dict(preferences_fields or {})
    try:
        profile = Profile.objects.select_for_update().get(user=user)
    except Profile.DoesNotExist:
        raise ApplicationError(
            "This account has no member profile.", status_code=404
        ) from None
    prefs, _ = Preferences.objects.select_for_update().get_or_create(
        user=user, defaults={"seeking_genders": list(Gender.values)}
    )

    if "interests" in profile_fields:
        profile_fields["interests"] = interests_normalize(
            interests=profile_fields["interests"]
        )
    changed_profile = _apply(profile, profile_fields, PROFILE_FIELDS)
    _validate_profile(profile)
    profile.last_active_at = timezone.now()
    profile.save(update_fields=[*changed_profile, "last_active_at", "updated_at"])

    if preferences_fields:
        if "seeking_genders" in preferences_fields:
            preferences_fields["seeking_genders"] = _dedupe(
                preferences_fields["seeking_genders"]
            )
        changed_prefs = _apply(prefs, preferences_fields, PREFERENCES_FIELDS)
        _validate_preferences(prefs)
        prefs.save(update_fields=changed_prefs)

    transaction.on_commit(lambda: recommendations_cache_invalidate(user_id=user.pk))
    # Hand back the instances already in memory so the caller needs no new query.
    user.preferences = prefs
    profile.user = user
    return profile


@transaction.atomic
def account_delete(*, user: User, password: str) -> AccountDeletion:
    """Delete the member's own account, confirmed by their password.

    The user row is locked first, so two deletions at once queue up: the second
    finds no account and raises ``AuthenticationFailed`` (401), as its token no
    longer exists either. Staff accounts are refused (403): they are closed by a
    superuser in the admin, where the audit rows they wrote stay attributed. A
    wrong or empty password raises ``ApplicationError`` (field ``password``) and
    deletes nothing. See :func:`account_erase` for what goes.
    """
    locked = User.objects.select_for_update().filter(pk=user.pk).first()
    if locked is None:
        raise exceptions.AuthenticationFailed("This account no longer exists.")
    if locked.is_staff or locked.is_superuser:
        raise ApplicationError(
            "Staff accounts are closed by a superuser in the admin, not here.",
            status_code=403,
        )
    # The stored hash, not user.check_password(): that one would save an upgraded
    # hash (a password change) on the row about to go.
    if not password or not check_password(password, locked.password):
        raise ApplicationError("Incorrect password.", field="password")
    return account_erase(user=locked, requested_by=DeletionRequester.MEMBER)


@transaction.atomic
def account_delete_by_staff(*, user: User, actor: User) -> AccountDeletion | None:
    """Delete an account from the admin (no password: the admin's permissions
    decide), audited with ``actor``; ``None`` when it is gone already."""
    locked = User.objects.select_for_update().filter(pk=user.pk).first()
    if locked is None:
        return None
    return account_erase(user=locked, requested_by=DeletionRequester.STAFF, actor=actor)


@transaction.atomic
def account_erase(
    *, user: User, requested_by: str, actor: User | None = None
) -> AccountDeletion:
    """Delete ``user`` and every row about them, and write the ``AccountDeletion``
    audit row, in one transaction.

    Gone with the user row (cascades): profile, preferences, interactions given and
    received, matches, impressions shown to them and of them, features, embedding
    rows under every version, API tokens. Their vectors stay in the FAISS index
    files until the next rebuild, which reads only stored rows; serving re-checks
    every shortlist and every cache hit against the database, so they are never
    shown again from the moment this commits. After commit, the member's own
    recommendation entry and recent-impressions list are dropped from the cache.
    The caller locks the user row (``select_for_update``) before deciding to call.
    """
    user_id = user.pk
    _, rows_deleted = user.delete()
    deletion = AccountDeletion.objects.create(
        user_id=user_id,
        requested_by=requested_by,
        # A staff member who deleted their own account is gone too.
        actor=actor if actor is not None and actor.pk != user_id else None,
        rows_deleted={label: count for label, count in rows_deleted.items() if count},
    )
    transaction.on_commit(
        lambda: _account_deleted_after_commit(
            user_id=user_id, requested_by=requested_by
        )
    )
    return deletion


def _account_deleted_after_commit(*, user_id: int, requested_by: str) -> None:
    from recommender.impressions import impressions_forget_recent

    logger.info("account %s deleted (requested by %s)", user_id, requested_by)
    recommendations_cache_invalidate(user_id=user_id)
    impressions_forget_recent(user_id=user_id)
