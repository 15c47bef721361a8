"""The data contract between the Django side and the numeric library.

Two column-oriented containers: :class:`MemberArrays` (one row per member, sorted by
user id) and :class:`InteractionArrays` (one row per interaction). The Django adapter
(``recommender/data.py``) fills them from the database; :func:`from_synthetic` fills
them from :mod:`recommender.ml.synthetic` for tests and benchmarks.

Kinds and genders are small integer codes (:data:`KIND_CODES`, :data:`GENDER_CODES`).
Times are unix seconds (float64); birthdays are days since 1970-01-01 (int32).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from recommender.ml import synthetic

KIND_CODES = {"like": 0, "super_like": 1, "dislike": 2, "block": 3}
GENDER_CODES = {"female": 0, "male": 1, "nonbinary": 2}
LIKE, SUPER_LIKE, DISLIKE, BLOCK = (KIND_CODES[k] for k in KIND_CODES)
POSITIVE_KIND_CODES = (LIKE, SUPER_LIKE)
SECONDS_PER_DAY = 86_400.0


@dataclass
class MemberArrays:
    """One row per member (a user with a Profile), sorted by ``user_id``.

    Shapes and dtypes (``n`` members):

    * ``user_id`` int64 [n], strictly ascending;
    * ``birth_day`` int32 [n], days since 1970-01-01;
    * ``gender`` int8 [n], :data:`GENDER_CODES`;
    * ``lat``, ``lon`` float32 [n], degrees, nan if unknown;
    * ``interests`` list of n lists of normalised interest strings;
    * ``created_ts`` float64 [n], unix seconds;
    * ``last_active_ts`` float64 [n], unix seconds, nan if never;
    * ``is_visible`` bool [n];
    * ``seeking_mask`` uint8 [n], bit g set = seeks gender code g;
    * ``min_age``, ``max_age`` int16 [n], sought age range, inclusive;
    * ``max_distance_km`` float32 [n], inf = any distance.
    """

    user_id: np.ndarray
    birth_day: np.ndarray
    gender: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    interests: list[list[str]]
    created_ts: np.ndarray
    last_active_ts: np.ndarray
    is_visible: np.ndarray
    seeking_mask: np.ndarray
    min_age: np.ndarray
    max_age: np.ndarray
    max_distance_km: np.ndarray

    def __post_init__(self) -> None:
        n = self.user_id.shape[0]
        for f in fields(self):
            value = getattr(self, f.name)
            if len(value) != n:
                raise ValueError(f"{f.name} has {len(value)} rows, user_id has {n}")
        if n > 1 and not np.all(self.user_id[1:] > self.user_id[:-1]):
            raise ValueError("user_id must be strictly ascending")

    @property
    def n(self) -> int:
        return int(self.user_id.shape[0])

    def index_of(self, user_ids: np.ndarray) -> np.ndarray:
        """int64 [k] row positions of ``user_ids`` (any int array [k]), -1 if absent."""
        return sorted_positions(self.user_id, user_ids)

    def take(self, positions: np.ndarray) -> MemberArrays:
        """The members at ``positions`` (int64 [k], ascending so ids stay sorted)."""
        positions = np.asarray(positions, dtype=np.int64)
        values = {
            f.name: (
                [self.interests[i] for i in positions.tolist()]
                if f.name == "interests"
                else getattr(self, f.name)[positions]
            )
            for f in fields(self)
        }
        return MemberArrays(**values)


@dataclass
class InteractionArrays:
    """One row per verdict; ``m`` rows, in any order.

    * ``actor``, ``target`` int64 [m], user ids;
    * ``kind`` int8 [m], :data:`KIND_CODES`;
    * ``ts`` float64 [m], unix seconds: when the verdict was given (the
      interaction's ``created_at``);
    * ``until`` float64 [m] or None: unix seconds when the member replaced the
      verdict by another (changed their mind), +inf while it still stands. ``None``
      (the default) means every row still stands: one current verdict per pair.

    With ``until``, a pair can have several rows: its verdicts one after the other,
    each replaced when the next was given (``until`` of one = ``ts`` of the next),
    so their periods ``[ts, until)`` never overlap. :meth:`before` and
    :meth:`between` cut such a history into one verdict per pair as it stood at
    the cut; their results, and :meth:`current`'s, have ``until=None``.
    """

    actor: np.ndarray
    target: np.ndarray
    kind: np.ndarray
    ts: np.ndarray
    until: np.ndarray | None = None

    def __post_init__(self) -> None:
        m = self.actor.shape[0]
        for name in ("target", "kind", "ts", "until"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != m:
                raise ValueError(f"{name} must have as many rows as actor ({m})")

    @classmethod
    def empty(cls) -> InteractionArrays:
        return cls(
            actor=np.zeros(0, dtype=np.int64),
            target=np.zeros(0, dtype=np.int64),
            kind=np.zeros(0, dtype=np.int8),
            ts=np.zeros(0, dtype=np.float64),
        )

    @property
    def m(self) -> int:
        return int(self.actor.shape[0])

    @property
    def is_positive(self) -> np.ndarray:
        """bool [m]: like or super-like."""
        return (self.kind == LIKE) | (self.kind == SUPER_LIKE)

    def select(self, mask: np.ndarray) -> InteractionArrays:
        """The rows where ``mask`` (bool [m]) is true, or at the int positions given
        (``until`` too, when there is one)."""
        return InteractionArrays(
            actor=self.actor[mask],
            target=self.target[mask],
            kind=self.kind[mask],
            ts=self.ts[mask],
            until=None if self.until is None else self.until[mask],
        )

    def _standing(self, mask: np.ndarray, at: float) -> InteractionArrays:
        """The rows of ``mask`` (bool [m]) whose verdict still stood just before
        ``at`` (not replaced before it), as current verdicts (``until=None``)."""
        if self.until is not None:
            mask = mask & (self.until >= at)
        chosen = self.select(mask)
        chosen.until = None
        return chosen

    def before(self, ts: float) -> InteractionArrays:
        """Each pair's verdict as it stood just before ``ts`` (unix seconds): the
        rows given strictly before ``ts`` and not replaced before it (at most one
        per pair; ``until=None``)."""
        return self._standing(self.ts < ts, ts)

    def between(self, start: float, end: float) -> InteractionArrays:
        """The verdicts given in ``[start, end)`` that still stood just before
        ``end`` (``end`` may be +inf: still standing now): a like turned into a
        pass inside the window counts as the pass, a like changed after ``end``
        as the like. At most one per pair; ``until=None``."""
        return self._standing((self.ts >= start) & (self.ts < end), end)

    def current(self) -> InteractionArrays:
        """Each pair's latest verdict (the rows never replaced; ``until=None``)."""
        if self.until is None:
            return self
        return self._standing(np.ones(self.m, dtype=bool), np.inf)

    def as_of(self, ts: float) -> InteractionArrays:
        """The history as it was known just before ``ts``: the rows given before
        it, a verdict replaced at or after ``ts`` standing (``until`` +inf). Cutting
        the result anywhere before ``ts`` gives what cutting ``self`` there does."""
        known = self.select(self.ts < ts)
        if known.until is not None:
            known.until = np.where(known.until < ts, known.until, np.inf)
        return known


def sorted_positions(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """int64 [k]: position of each of ``values`` [k] in the ascending, unique
    ``sorted_values`` [n], or -1 where it is absent."""
    values = np.asarray(values)
    if sorted_values.shape[0] == 0:
        return np.full(values.shape, -1, dtype=np.int64)
    slot = np.searchsorted(sorted_values, values)
    slot = np.minimum(slot, sorted_values.shape[0] - 1)
    return np.where(sorted_values[slot] == values, slot, -1).astype(np.int64)


# --- synthetic data --------------------------------------------------------------

# synthetic.KINDS order (like, dislike, super_like, block) -> KIND_CODES.
_SYNTHETIC_KIND_TO_CODE = np.array(
    [KIND_CODES[name] for name in synthetic.KINDS], dtype=np.int8
)


def from_synthetic(
    dataset: synthetic.SyntheticDataset,
    *,
    window_end_ts: float = 1_750_000_000.0,
    first_user_id: int = 1,
    id_step: int = 1,
) -> tuple[MemberArrays, InteractionArrays]:
    """Convert a :func:`synthetic.generate_dataset` result to the contract arrays.

    Member ``i`` gets user id ``first_user_id + i * id_step`` (``id_step`` > 1 leaves
    gaps, like real ids); the generator's window ends at ``window_end_ts`` (unix
    seconds). Interactions keep the generator's time order.
    """
    if id_step < 1:
        raise ValueError("id_step must be >= 1")
    members = dataset.members
    n = members.n
    window_start = float(window_end_ts) - dataset.config.window_seconds
    user_id = first_user_id + np.arange(n, dtype=np.int64) * id_step
    end_day = int(np.floor(window_end_ts / SECONDS_PER_DAY))
    seeking_mask = (
        members.seeking.astype(np.uint8) << np.arange(3, dtype=np.uint8)[None, :]
    ).sum(axis=1, dtype=np.uint8)
    max_distance = np.where(
        members.max_distance_km == synthetic.NO_DISTANCE_LIMIT,
        np.inf,
        members.max_distance_km,
    ).astype(np.float32)
    member_arrays = MemberArrays(
        user_id=user_id,
        birth_day=(end_day - members.birth_offset_days).astype(np.int32),
        gender=members.gender.astype(np.int8),
        lat=members.latitude.astype(np.float32),
        lon=members.longitude.astype(np.float32),
        interests=synthetic.interest_lists(members),
        created_ts=window_start + members.created_at_s.astype(np.float64),
        last_active_ts=window_start + members.last_active_at_s.astype(np.float64),
        is_visible=members.is_visible.copy(),
        seeking_mask=seeking_mask,
        min_age=members.min_age.astype(np.int16),
        max_age=members.max_age.astype(np.int16),
        max_distance_km=max_distance,
    )
    interactions = dataset.interactions
    interaction_arrays = InteractionArrays(
        actor=user_id[interactions.actor],
        target=user_id[interactions.target],
        kind=_SYNTHETIC_KIND_TO_CODE[interactions.kind],
        ts=window_start + interactions.created_at_s.astype(np.float64),
    )
    return member_arrays, interaction_arrays
