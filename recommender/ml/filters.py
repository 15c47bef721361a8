"""The hard filters, vectorised over the members held in memory (no Django).

A candidate is allowed for a viewer only if all of these hold: not the viewer
themself; the viewer never interacted with them (any kind) and they did not block
the viewer; their profile is visible and their account active; both members'
preferences hold (each seeks the other's gender, each one's age is in the other's
range and, when both have coordinates, their distance is within each one's
``max_distance_km``). Ages are whole years on ``today``.

:func:`population_mask` is the one implementation every candidate source, the
training rows and the offline evaluation go through; ``recommender/filters.py``
re-checks the final shortlist against fresh database rows with the same rules.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from recommender.ml.data import (
    BLOCK,
    InteractionArrays,
    MemberArrays,
    sorted_positions,
)
from recommender.ml.features import EARTH_RADIUS_KM

_EPOCH = np.datetime64("1970-01-01", "D")


@dataclass
class FilterArrays:
    """The filter columns of the members held in memory (``n`` rows aligned with a
    ``MemberArrays``): ``user_id`` int64 [n]; ``eligible`` bool [n] (visible profile
    of an active user); ``gender`` uint8 [n]; ``seeking_mask`` uint8 [n];
    ``min_age``, ``max_age`` int16 [n]; ``birth_year`` int32 [n] and ``birth_md``
    int32 [n] (month * 100 + day), for whole-year ages on any date; ``xyz`` float64
    [n, 3] unit vectors of the locations (nan rows = unknown); ``max_distance_km``
    float64 [n] (inf = any)."""

    user_id: np.ndarray
    eligible: np.ndarray
    gender: np.ndarray
    seeking_mask: np.ndarray
    min_age: np.ndarray
    max_age: np.ndarray
    birth_year: np.ndarray
    birth_md: np.ndarray
    xyz: np.ndarray
    max_distance_km: np.ndarray

    @property
    def n(self) -> int:
        return int(self.user_id.shape[0])

    def ages_on(self, today: dt.date) -> np.ndarray:
        """int32 [n] whole years of age on ``today``."""
        before_birthday = (today.month * 100 + today.day) < self.birth_md
        return (today.year - self.birth_year - before_birthday).astype(np.int32)


def filter_arrays_build(
    members: MemberArrays, *, inactive_user_ids: np.ndarray | None = None
) -> FilterArrays:
    """The filter columns of ``members``; ``inactive_user_ids`` (int64) are users
    whose account is deactivated (never shown)."""
    birth_year, birth_md = _birth_parts(members.birth_day)
    active = np.ones(members.n, dtype=bool)
    if inactive_user_ids is not None and len(inactive_user_ids):
        active = ~np.isin(members.user_id, inactive_user_ids)
    return FilterArrays(
        user_id=members.user_id,
        eligible=members.is_visible & active,
        gender=members.gender.astype(np.uint8),
        seeking_mask=members.seeking_mask.astype(np.uint8),
        min_age=members.min_age.astype(np.int16),
        max_age=members.max_age.astype(np.int16),
        birth_year=birth_year,
        birth_md=birth_md,
        xyz=unit_xyz(members.lat, members.lon),
        max_distance_km=members.max_distance_km.astype(np.float64),
    )


def _birth_parts(birth_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(year int32 [n], month * 100 + day int32 [n]) of days since 1970-01-01."""
    birth = _EPOCH + np.asarray(birth_day).astype("timedelta64[D]")
    years = birth.astype("datetime64[Y]")
    months = birth.astype("datetime64[M]")
    year = years.astype(np.int64) + 1970
    month = (months - years.astype("datetime64[M]")).astype(np.int64) + 1
    day = (birth - months.astype("datetime64[D]")).astype(np.int64) + 1
    return year.astype(np.int32), (month * 100 + day).astype(np.int32)


def unit_xyz(lat, lon) -> np.ndarray:
    """float64 [n, 3] unit vectors of points in degrees (nan rows = unknown)."""
    lat = np.radians(np.asarray(lat, dtype=np.float64))
    lon = np.radians(np.asarray(lon, dtype=np.float64))
    return np.stack(
        [np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1
    )


def excluded_ids(*, user_id: int, history: InteractionArrays) -> np.ndarray:
    """int64 sorted unique: the viewer, everyone they interacted with (any kind)
    and everyone who blocked them (``history``: interactions they gave or
    received)."""
    given = history.target[history.actor == user_id]
    blocked_by = history.actor[(history.target == user_id) & (history.kind == BLOCK)]
    return np.unique(np.concatenate([[user_id], given, blocked_by]).astype(np.int64))


def population_mask(
    arrays: FilterArrays,
    viewer: MemberArrays,
    excluded: np.ndarray,
    *,
    today: dt.date,
) -> np.ndarray:
    """bool [n]: the members allowed for ``viewer`` (a one-row ``MemberArrays``)
    by every rule, ``excluded`` (int64 user ids, see :func:`excluded_ids`) removed."""
    ages = arrays.ages_on(today)
    year, md = _birth_parts(viewer.birth_day[:1])
    viewer_age = int(today.year - year[0] - ((today.month * 100 + today.day) < md[0]))
    one = np.uint8(1)
    mask = arrays.eligible.copy()
    mask &= ((np.uint8(viewer.seeking_mask[0]) >> arrays.gender) & one).astype(bool)
    mask &= ((arrays.seeking_mask >> np.uint8(viewer.gender[0])) & one).astype(bool)
    mask &= (ages >= int(viewer.min_age[0])) & (ages <= int(viewer.max_age[0]))
    mask &= (arrays.min_age <= viewer_age) & (arrays.max_age >= viewer_age)
    viewer_xyz = unit_xyz(viewer.lat[:1], viewer.lon[:1])[0]
    if np.all(np.isfinite(viewer_xyz)):
        limit = np.minimum(arrays.max_distance_km, float(viewer.max_distance_km[0]))
        limited = np.isfinite(limit) & np.isfinite(arrays.xyz[:, 0])
        if limited.any():
            rows = np.flatnonzero(limited & mask)
            cosine = np.clip(arrays.xyz[rows] @ viewer_xyz, -1.0, 1.0)
            distance = EARTH_RADIUS_KM * np.arccos(cosine)
            mask[rows[distance > limit[rows]]] = False
    positions = sorted_positions(arrays.user_id, np.asarray(excluded, np.int64))
    mask[positions[positions >= 0]] = False
    return mask
