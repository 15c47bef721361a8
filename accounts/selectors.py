"""Reads of the accounts app."""

import datetime as dt
import functools
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import Case, F, Q, When
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.models import Preferences, Profile, User
from interactions.models import Interaction, Match
from interactions.selectors import block_exists_between
from recommender.models import RecommendationLog, UserEmbedding, UserFeatures

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


def auth_token_get(*, key: str) -> Token | None:
    """The API token ``key`` with its member loaded (``token.user``), or None.

    One query, in plain SQL: it runs on every authenticated request, where the
    ORM's ``select_related`` get cost more Python than the query itself (issue 16).
    Every column of both rows is read, so nothing is loaded lazily afterwards.
    """
    if not _could_be_token(key):
        return None  # no such key can exist: not worth a round trip
    if connection.vendor != "postgresql":
        # SQLite (the quick start) hands datetimes back as text: the ORM converts.
        return Token.objects.select_related("user").filter(key=key).first()
    found = _auth_token_read(key=key, column="", params=())
    return None if found is None else found[0]


def auth_token_get_with(
    *, key: str, column: str, params: Sequence = ()
) -> tuple[Token, object] | None:
    """:func:`auth_token_get`'s token (with its member), and the value of one more
    SQL expression read in the same query: ``column`` with its ``params``
    (``%s`` placeholders). None when there is no such token.

    For a caller that needs a token checked and one more thing read and would
    otherwise pay two round trips (a recommendation cache hit's re-check,
    ``recommender.hits``). PostgreSQL only.
    """
    if not _could_be_token(key):
        return None
    return _auth_token_read(key=key, column=column, params=params)


def _could_be_token(key: str) -> bool:
    max_length = Token._meta.get_field("key").max_length
    return bool(key) and len(key) <= max_length and "\x00" not in key


def _auth_token_read(
    *, key: str, column: str, params: Sequence
) -> tuple[Token, object] | None:
    sql, token_columns, user_columns = _auth_token_sql(column)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, key])
        row = cursor.fetchone()
    if row is None:
        return None
    users_from = len(token_columns)
    users_to = users_from + len(user_columns)
    token = Token.from_db(connection.alias, token_columns, row[:users_from])
    token.user = User.from_db(connection.alias, user_columns, row[users_from:users_to])
    return token, (row[users_to] if column else None)


@functools.lru_cache(maxsize=256)
def _auth_token_sql(column: str) -> tuple[str, list[str], list[str]]:
    quote = connection.ops.quote_name
    token_fields = [f.attname for f in Token._meta.concrete_fields]
    user_fields = [f.attname for f in User._meta.concrete_fields]
    token_columns = [Token._meta.get_field(f).column for f in token_fields]
    user_columns = [User._meta.get_field(f).column for f in user_fields]
    user_fk = Token._meta.get_field("user").column
    select = [f"t.{quote(c)}" for c in token_columns] + [
        f"u.{quote(c)}" for c in user_columns
    ]
    if column:
        select.append(column)
    sql = (
        f"SELECT {', '.join(select)} FROM {quote(Token._meta.db_table)} t "
        f"JOIN {quote(User._meta.db_table)} u "
        f"ON u.{quote(User._meta.pk.column)} = t.{quote(user_fk)} "
        f"WHERE t.{quote(Token._meta.pk.column)} = %s"
    )
    return sql, token_fields, user_fields


def auth_token_is_current(*, token: Token) -> bool:
    """Whether ``token`` may still authenticate: issued within the token lifetime
    (``KINDRED["AUTH_TOKEN_TTL_HOURS"]``, 0 for no limit) and not before its
    member's latest password change. Reads ``token.user`` as loaded with it."""
    hours = settings.KINDRED["AUTH_TOKEN_TTL_HOURS"]
    if hours and token.created < timezone.now() - dt.timedelta(hours=hours):
        return False
    changed = token.user.password_changed_at
    return changed is None or token.created >= changed


def auth_token_accepted(*, token: Token) -> bool:
    """Whether ``ExpiringTokenAuthentication`` accepts ``token`` (read with its
    member): the member is active and the token current."""
    return token.user.is_active and auth_token_is_current(token=token)


# Rows read per round trip while an export streams.
EXPORT_CHUNK_ROWS = 2_000


@dataclass(frozen=True)
class AccountExport:
    """Everything Kindred stores about one member, for ``GET .../me/export/``.

    ``account``, ``profile`` and ``preferences`` are read at once; the lists are
    lazy iterators of plain dicts, read in chunks while the answer is written, so
    a member with years of impressions costs no more memory than one with none.
    """

    account: dict
    profile: Profile | None
    preferences: Preferences | None
    interactions: Iterator[dict]
    matches: Iterator[dict]
    impressions: Iterator[dict]
    features: Iterator[dict]
    embeddings: Iterator[dict]


def account_export(*, user: User) -> AccountExport:
    """The data of ``user``'s account: the account itself, profile, preferences,
    the interactions they gave, their matches (active and ended, with the other
    member's id), the impressions shown to them, their stored features and
    embedding vectors.

    What others did to them (likes and blocks received, being shown to others) is
    left out: it is the other members' activity, and a block received must never
    be revealed.
    """
    return AccountExport(
        account={
            "id": user.pk,
            "username": user.username,
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "date_joined": user.date_joined,
            "last_login": user.last_login,
        },
        profile=profile_get_own(user=user),
        preferences=Preferences.objects.filter(user=user).first(),
        interactions=(
            {"target": row.pop("target_id"), **row}
            for row in _rows(
                Interaction.objects.filter(actor=user).values(
                    "target_id", "kind", "context", "created_at", "updated_at"
                )
            )
        ),
        matches=_rows(
            Match.objects.filter(Q(user_low=user) | Q(user_high=user))
            .annotate(
                other=Case(
                    When(user_low=user, then=F("user_high_id")),
                    default=F("user_low_id"),
                )
            )
            .values("matched_at", "ended_at", "end_reason", user_id=F("other")),
            order=("matched_at",),
        ),
        impressions=_rows(
            RecommendationLog.objects.filter(user=user).values(
                "request_id",
                "shown_user_id",
                "position",
                "score",
                "sources",
                "strategy",
                "model_versions",
                "experiment",
                "created_at",
            )
        ),
        features=_rows(
            UserFeatures.objects.filter(user=user).values(
                "feature_version", "feature_set", "computed_at"
            ),
            order=("computed_at",),
        ),
        embeddings=(
            {
                "model_version": row["model__version"],
                "created_at": row["created_at"],
                "vector": _floats(row["vector"]),
            }
            for row in _rows(
                UserEmbedding.objects.filter(user=user).values(
                    "model__version", "created_at", "vector"
                ),
                order=("model__version",),
            )
        ),
    )


def _rows(queryset, *, order=("created_at",)) -> Iterator[dict]:
    """The rows of ``queryset`` in ``order`` (then by id), fetched
    ``EXPORT_CHUNK_ROWS`` at a time (a server-side cursor on PostgreSQL)."""
    return queryset.order_by(*order, "pk").iterator(chunk_size=EXPORT_CHUNK_ROWS)


def _floats(vector: bytes) -> list[float]:
    """A stored float32 little-endian vector as numbers (7 significant digits is
    all float32 holds)."""
    data = bytes(vector)
    return [float(f"{x:.7g}") for x in struct.unpack(f"<{len(data) // 4}f", data)]
