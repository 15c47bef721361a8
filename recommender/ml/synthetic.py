"""Synthetic members and interactions with a planted, measurable preference structure.

Pure numpy (no Django): :func:`generate_dataset` returns arrays in dataclasses; the
Django adapter (``accounts/demo.py``) turns them into rows. Everything is determined by
``seed`` through one ``numpy.random.Generator``: the same seed, member count, mean
activity and config give bit-identical arrays.

Times are integer seconds since the start of a window of ``config.window_days`` days
that ends at seeding time, so the arrays stay deterministic while the rows the adapter
writes are always recent.

The population
--------------
* ``gender`` female / male / nonbinary in about 48 / 48 / 4 %; ``age_years`` 18-65,
  skewed young (Beta(1.6, 2.6)); ``birth_offset_days`` puts the birthday strictly
  inside that year of age, counted back from the window end.
* One of 20 European cities (weighted roughly by size), location = city centre plus
  a few km of Gaussian jitter.
* A latent **tribe** (``config.n_tribes`` = 8, unequal sizes). Each tribe has its own
  concentrated distribution over the 40 :data:`INTERESTS`; a member's 3-8 interests are
  drawn from their tribe's distribution without replacement, so interests reveal the
  tribe only noisily (content-based methods get a partial signal).
* Preferences: mostly the opposite gender (some both, a few the same or everyone),
  an age range around the member's own age, no distance limit for ~70 % and a limit of
  100-2,000 km for the rest. A few % are invisible.
* ``created_at_s`` over the window (80 % Beta(1, 2.5): most joined early, 20 %
  uniform: a trickle of newcomers up to the end); ``last_active_at_s`` shortly after the
  member's last own interaction (or after joining).

The planted structure (what a recommender should learn)
-------------------------------------------------------
* Each member has a **preferred tribe** (their taste): their own tribe with
  probability ``own_tribe_taste`` (0.5), otherwise another tribe drawn from a
  tribe-level taste matrix ``tribe_taste`` (K, K), so "members of tribe 3 tend to like
  tribe 5" is a collaborative pattern, not noise.
* Each member has an **attractiveness** ~ N(0, 1) (the popularity signal) and a
  **generosity** ~ N(0, 0.5) (how readily they like anyone).
* An actor likes a candidate with probability::

      sigmoid(tribe_weight * [tribe(candidate) == preferred_tribe(actor)]
              + attractiveness_weight * attractiveness(candidate)
              + overlap_weight * jaccard(interests(actor), interests(candidate))
              + generosity(actor)
              - outside_preferences_penalty * [candidate outside actor's gender/age]
              - like_bias)

  With the defaults the like rate for preferred-tribe candidates is several times the
  rate for the others, while attractiveness alone (what popularity captures) explains
  only part of the likes. A like is a ``super_like`` with probability
  ``super_like_share``; a non-like is a ``block`` with probability ``block_rate``
  (about 0.5 % of all interactions) and a ``dislike`` otherwise.

Who sees whom
-------------
Each member views about ``interactions_per_member`` candidates (Gamma-distributed
activity, 1 to 4x the mean):

1. mostly members drawn uniformly among those satisfying the actor's own gender, age
   and (city-level) distance preferences, plus an ``exploration_share`` (8 %) drawn from
   everyone;
2. a ``reply_share`` (25 %) of their views are replies to members who liked them
   (the "likes you" queue of dating apps), timed after that like; this is what makes
   mutual likes, and therefore matches, common enough to matter;
3. a top-up from further preference-satisfying draws when there were too few replies.

Pairs are unique per (actor, target) and never self pairs. View times are uniform
between the later of the two members' join times and the window end (replies: after
the like they answer), and the interactions are sorted by time, so a time-based split
(train on the past, evaluate on the last days) is meaningful. ``like_probability``
holds the ground-truth probability of every pair, for oracle baselines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GENDERS = ("female", "male", "nonbinary")
GENDER_SHARES = (0.48, 0.48, 0.04)
FEMALE, MALE, NONBINARY = range(3)

KINDS = ("like", "dislike", "super_like", "block")
LIKE, DISLIKE, SUPER_LIKE, BLOCK = range(4)
POSITIVE_KIND_CODES = (LIKE, SUPER_LIKE)

MIN_AGE, MAX_AGE = 18, 65
MAX_SOUGHT_AGE = 99
NO_DISTANCE_LIMIT = -1
SECONDS_PER_DAY = 86_400
DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class City:
    name: str
    latitude: float
    longitude: float
    weight: float


CITIES = (
    City("London", 51.5072, -0.1276, 9.0),
    City("Paris", 48.8566, 2.3522, 7.0),
    City("Berlin", 52.5200, 13.4050, 6.0),
    City("Madrid", 40.4168, -3.7038, 6.0),
    City("Rome", 41.9028, 12.4964, 4.5),
    City("Barcelona", 41.3874, 2.1686, 4.5),
    City("Milan", 45.4642, 9.1900, 4.0),
    City("Hamburg", 53.5511, 9.9937, 3.5),
    City("Vienna", 48.2082, 16.3738, 3.5),
    City("Warsaw", 52.2297, 21.0122, 3.5),
    City("Munich", 48.1351, 11.5820, 3.0),
    City("Amsterdam", 52.3676, 4.9041, 3.0),
    City("Prague", 50.0755, 14.4378, 2.5),
    City("Stockholm", 59.3293, 18.0686, 2.5),
    City("Lisbon", 38.7223, -9.1393, 2.5),
    City("Manchester", 53.4808, -2.2426, 2.5),
    City("Cologne", 50.9375, 6.9603, 2.0),
    City("Copenhagen", 55.6761, 12.5683, 2.0),
    City("Brussels", 50.8503, 4.3517, 2.0),
    City("Dublin", 53.3498, -6.2603, 2.0),
)

INTERESTS = (
    "hiking",
    "travel",
    "jazz",
    "cooking",
    "photography",
    "yoga",
    "running",
    "cycling",
    "climbing",
    "swimming",
    "skiing",
    "surfing",
    "camping",
    "gardening",
    "painting",
    "reading",
    "poetry",
    "theatre",
    "cinema",
    "board games",
    "video games",
    "chess",
    "football",
    "tennis",
    "dancing",
    "salsa",
    "techno",
    "indie rock",
    "classical music",
    "karaoke",
    "wine",
    "craft beer",
    "coffee",
    "baking",
    "vegan food",
    "museums",
    "volunteering",
    "dogs",
    "meditation",
    "astronomy",
)

FIRST_NAMES = (
    # female
    (
        "Anna", "Emma", "Sofia", "Mia", "Lena", "Clara", "Julia", "Laura", "Marie",
        "Elena", "Chloe", "Giulia", "Lucia", "Ines", "Freya", "Alice", "Nora", "Ella",
        "Zoe", "Maja", "Ingrid", "Sara", "Hannah", "Olivia", "Amelie", "Eva", "Camille",
        "Isabel", "Martina", "Aoife",
    ),
    # male
    (
        "Lukas", "Leon", "Noah", "Paul", "Jonas", "Elias", "Felix", "Luca", "Mateo",
        "Hugo", "Louis", "Oliver", "Jack", "Marco", "Pablo", "Tomas", "Erik", "Jan",
        "Finn", "David", "Adam", "Max", "Daniel", "Liam", "Oscar", "Antoine", "Diego",
        "Matteo", "Piotr", "Cian",
    ),
    # nonbinary
    (
        "Alex", "Sam", "Robin", "Charlie", "Kim", "Jules", "Noa", "Sasha", "Eden",
        "River", "Andrea", "Kai", "Quinn", "Luca", "Ari",
    ),
)  # fmt: skip

BIO_ENDINGS = (
    "Looking for someone to share it with.",
    "Ask me about my last trip.",
    "Weekends are for adventures.",
    "Coffee first, then conversation.",
    "Happiest outdoors.",
    "Let's swap recommendations.",
    "Terrible at small talk, great at long talks.",
    "New in town and curious.",
    "Bonus points if you make me laugh.",
    "Here for something real.",
)

# Distance limits (km) for the members who set one, with their shares.
DISTANCE_LIMITS_KM = (100, 300, 800, 2_000)
DISTANCE_LIMIT_SHARES = (0.25, 0.35, 0.25, 0.15)
_AGE_SLOTS = 100  # ages MIN_AGE..MAX_SOUGHT_AGE fit in one block of the sort key


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator; the defaults are what ``seed_demo`` uses."""

    n_tribes: int = 8
    own_tribe_taste: float = 0.5
    tribe_weight: float = 2.5
    attractiveness_weight: float = 0.8
    overlap_weight: float = 2.0
    like_bias: float = 2.0
    generosity_sd: float = 0.5
    outside_preferences_penalty: float = 3.0
    super_like_share: float = 0.06
    block_rate: float = 0.0075
    exploration_share: float = 0.08
    reply_share: float = 0.25
    invisible_share: float = 0.03
    no_distance_limit_share: float = 0.7
    window_days: int = 180
    min_interests: int = 3
    max_interests: int = 8

    @property
    def window_seconds(self) -> int:
        return self.window_days * SECONDS_PER_DAY


@dataclass(frozen=True)
class SyntheticMembers:
    """Members, one row per index ``0..n-1`` of every array.

    Shapes and dtypes (``n`` members, ``V = len(INTERESTS)``):

    * ``gender`` (n,) int8 — index into :data:`GENDERS`;
    * ``age_years`` (n,) int16 — 18..65 at the window end;
    * ``birth_offset_days`` (n,) int32 — birth date = window end date minus this;
    * ``city`` (n,) int16 — index into :data:`CITIES`;
    * ``latitude``, ``longitude`` (n,) float64 — degrees;
    * ``interests`` (n, V) bool — ``interests[i, j]``: member i lists INTERESTS[j];
    * ``tribe``, ``preferred_tribe`` (n,) int8 — latent group and taste;
    * ``attractiveness``, ``generosity`` (n,) float32 — latent scores;
    * ``is_visible`` (n,) bool;
    * ``created_at_s``, ``last_active_at_s`` (n,) int64 — seconds since window start;
    * ``seeking`` (n, 3) bool — ``seeking[i, g]``: member i wants to see GENDERS[g];
    * ``min_age``, ``max_age`` (n,) int16 — sought age range, inclusive;
    * ``max_distance_km`` (n,) int32 — :data:`NO_DISTANCE_LIMIT` (-1) for none;
    * ``name_index`` (n,) int16 — into ``FIRST_NAMES[gender]``; ``initial`` (n,) int8
      — last-name initial, 0..25; ``bio_index`` (n,) int8 — into BIO_ENDINGS.
    """

    gender: np.ndarray
    age_years: np.ndarray
    birth_offset_days: np.ndarray
    city: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    interests: np.ndarray
    tribe: np.ndarray
    preferred_tribe: np.ndarray
    attractiveness: np.ndarray
    generosity: np.ndarray
    is_visible: np.ndarray
    created_at_s: np.ndarray
    last_active_at_s: np.ndarray
    seeking: np.ndarray
    min_age: np.ndarray
    max_age: np.ndarray
    max_distance_km: np.ndarray
    name_index: np.ndarray
    initial: np.ndarray
    bio_index: np.ndarray

    @property
    def n(self) -> int:
        return int(self.gender.shape[0])


@dataclass(frozen=True)
class SyntheticInteractions:
    """Interactions sorted by time (ties by actor, target); ``m`` rows.

    * ``actor``, ``target`` (m,) int32 — member indices, never equal, each
      (actor, target) at most once;
    * ``kind`` (m,) int8 — index into :data:`KINDS`;
    * ``created_at_s`` (m,) int64 — seconds since window start, after both members
      joined;
    * ``like_probability`` (m,) float32 — the planted probability of a positive verdict.
    """

    actor: np.ndarray
    target: np.ndarray
    kind: np.ndarray
    created_at_s: np.ndarray
    like_probability: np.ndarray

    @property
    def m(self) -> int:
        return int(self.actor.shape[0])

    @property
    def is_positive(self) -> np.ndarray:
        """(m,) bool: like or super-like."""
        return np.isin(self.kind, POSITIVE_KIND_CODES)

    def count_by_kind(self) -> dict[str, int]:
        counts = np.bincount(self.kind, minlength=len(KINDS))
        return {name: int(counts[code]) for code, name in enumerate(KINDS)}


@dataclass(frozen=True)
class MutualPairs:
    """Mutual positive pairs (future matches), sorted by (low, high); ``p`` rows.

    ``low``, ``high`` (p,) int32 member indices with low < high; ``matched_at_s`` (p,)
    int64, the later of the two positive verdicts, seconds since window start.
    """

    low: np.ndarray
    high: np.ndarray
    matched_at_s: np.ndarray


@dataclass(frozen=True)
class SyntheticDataset:
    """Everything :func:`generate_dataset` draws.

    ``tribe_interest_probs`` (K, V) float64: each tribe's interest distribution (rows
    sum to 1); ``tribe_taste`` (K, K) float64: row k is the distribution of preferred
    tribes among members of tribe k.
    """

    seed: int
    config: SyntheticConfig
    tribe_interest_probs: np.ndarray
    tribe_taste: np.ndarray
    members: SyntheticMembers
    interactions: SyntheticInteractions


def generate_dataset(
    *,
    n_members: int,
    seed: int,
    interactions_per_member: int = 20,
    config: SyntheticConfig | None = None,
) -> SyntheticDataset:
    """Draw ``n_members`` members and ~``n_members * interactions_per_member``
    interactions with the planted structure described in the module docstring.

    Deterministic in (``n_members``, ``seed``, ``interactions_per_member``, ``config``).
    """
    if n_members < 0:
        raise ValueError("n_members must be >= 0")
    if interactions_per_member < 0:
        raise ValueError("interactions_per_member must be >= 0")
    config = config or SyntheticConfig()
    rng = np.random.default_rng(seed)

    tribe_interest_probs, tribe_taste = _draw_tribes(rng, config)
    members = _draw_members(rng, n_members, config, tribe_interest_probs, tribe_taste)
    interactions = _draw_interactions(rng, members, interactions_per_member, config)
    members = _with_last_activity(rng, members, interactions, config)
    return SyntheticDataset(
        seed=seed,
        config=config,
        tribe_interest_probs=tribe_interest_probs,
        tribe_taste=tribe_taste,
        members=members,
        interactions=interactions,
    )


def mutual_positive_pairs(
    interactions: SyntheticInteractions, n_members: int
) -> MutualPairs:
    """The pairs where both sides gave a positive verdict (like or super-like)."""
    positive = interactions.is_positive
    actor = interactions.actor[positive].astype(np.int64)
    target = interactions.target[positive].astype(np.int64)
    times = interactions.created_at_s[positive]

    keys = actor * n_members + target
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    reverse = target * n_members + actor
    slot = np.minimum(np.searchsorted(sorted_keys, reverse), max(len(keys) - 1, 0))
    found = sorted_keys[slot] == reverse if len(keys) else np.zeros(0, dtype=bool)
    chosen = found & (actor < target)

    low, high = actor[chosen], target[chosen]
    matched_at = np.maximum(times[chosen], times[order[slot[chosen]]])
    by_pair = np.lexsort((high, low))
    return MutualPairs(
        low=low[by_pair].astype(np.int32),
        high=high[by_pair].astype(np.int32),
        matched_at_s=matched_at[by_pair].astype(np.int64),
    )


def display_names(members: SyntheticMembers) -> list[str]:
    """One display name per member, e.g. ``"Anna K."``."""
    initials = [chr(ord("A") + int(i)) for i in members.initial]
    return [
        f"{FIRST_NAMES[int(g)][int(k) % len(FIRST_NAMES[int(g)])]} {initial}."
        for g, k, initial in zip(
            members.gender, members.name_index, initials, strict=True
        )
    ]


def interest_lists(members: SyntheticMembers) -> list[list[str]]:
    """Each member's interests as strings, in vocabulary order."""
    rows, columns = np.nonzero(members.interests)
    lists: list[list[str]] = [[] for _ in range(members.n)]
    for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
        lists[row].append(INTERESTS[column])
    return lists


def bios(
    members: SyntheticMembers, interests: list[list[str]] | None = None
) -> list[str]:
    """A short bio per member built from their interests and city."""
    interests = interest_lists(members) if interests is None else interests
    result = []
    for listed, city, ending in zip(
        interests, members.city, members.bio_index, strict=True
    ):
        favourites = ", ".join(listed[:3]) if listed else "good company"
        result.append(
            f"{CITIES[int(city)].name}-based. Into {favourites}. "
            f"{BIO_ENDINGS[int(ending)]}"
        )
    return result


def city_distances_km() -> np.ndarray:
    """(C, C) float64 great-circle distances between the centres of :data:`CITIES`."""
    lat = np.radians([c.latitude for c in CITIES])
    lon = np.radians([c.longitude for c in CITIES])
    dlat = lat[:, None] - lat[None, :]
    dlon = lon[:, None] - lon[None, :]
    h = (
        np.sin(dlat / 2) ** 2
        + np.cos(lat)[:, None] * np.cos(lat)[None, :] * np.sin(dlon / 2) ** 2
    )
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


# --- members -----------------------------------------------------------------------


def _draw_tribes(
    rng: np.random.Generator, config: SyntheticConfig
) -> tuple[np.ndarray, np.ndarray]:
    k, v = config.n_tribes, len(INTERESTS)
    # Concentrated Dirichlet: each tribe has a handful of signature interests; the
    # uniform floor keeps every interest possible in every tribe.
    interest_probs = 0.9 * rng.dirichlet(np.full(v, 0.25), size=k) + 0.1 / v
    taste = np.zeros((k, k))
    for tribe in range(k):
        others = [o for o in range(k) if o != tribe]
        taste[tribe, others] = (1 - config.own_tribe_taste) * rng.dirichlet(
            np.full(k - 1, 0.7)
        )
        taste[tribe, tribe] = config.own_tribe_taste
    return interest_probs, taste


def _categorical_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of ``probs`` (n, k) -> (n,) int64."""
    cumulative = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1)) * cumulative[:, -1:]
    return np.minimum((u >= cumulative).sum(axis=1), probs.shape[1] - 1)


def _draw_members(
    rng: np.random.Generator,
    n: int,
    config: SyntheticConfig,
    tribe_interest_probs: np.ndarray,
    tribe_taste: np.ndarray,
) -> SyntheticMembers:
    gender = rng.choice(3, size=n, p=GENDER_SHARES).astype(np.int8)
    age = MIN_AGE + np.floor(rng.beta(1.6, 2.6, size=n) * (MAX_AGE - MIN_AGE + 1))
    age = np.minimum(age, MAX_AGE).astype(np.int16)
    # Strictly inside the year of age, so the calendar age equals age_years.
    birth_offset = np.round(age * DAYS_PER_YEAR).astype(np.int32) + rng.integers(
        2, 364, size=n, dtype=np.int32
    )

    weights = np.array([c.weight for c in CITIES])
    city = rng.choice(len(CITIES), size=n, p=weights / weights.sum()).astype(np.int16)
    centre_lat = np.array([c.latitude for c in CITIES])[city]
    centre_lon = np.array([c.longitude for c in CITIES])[city]
    latitude = np.round(centre_lat + rng.normal(0, 0.03, size=n), 5)
    longitude = np.round(
        centre_lon + rng.normal(0, 0.03, size=n) / np.cos(np.radians(centre_lat)), 5
    )

    tribe_shares = rng.dirichlet(np.full(config.n_tribes, 4.0))
    tribe = rng.choice(config.n_tribes, size=n, p=tribe_shares).astype(np.int8)
    preferred_tribe = _categorical_rows(rng, tribe_taste[tribe]).astype(np.int8)

    # Without-replacement draws by the Gumbel top-k trick, vectorised over members.
    v = len(INTERESTS)
    n_interests = rng.integers(config.min_interests, config.max_interests + 1, size=n)
    scores = np.log(tribe_interest_probs[tribe]) + rng.gumbel(size=(n, v))
    ranked = np.argsort(-scores, axis=1)
    interests = np.zeros((n, v), dtype=bool)
    np.put_along_axis(
        interests, ranked, np.arange(v)[None, :] < n_interests[:, None], axis=1
    )

    attractiveness = rng.normal(0, 1, size=n).astype(np.float32)
    generosity = rng.normal(0, config.generosity_sd, size=n).astype(np.float32)
    is_visible = rng.random(n) >= config.invisible_share
    # Most members joined early in the window, with a steady trickle of newcomers;
    # uniform joins would crowd almost all activity into the last weeks.
    joined = np.where(rng.random(n) < 0.8, rng.beta(1.0, 2.5, size=n), rng.random(n))
    created_at_s = np.floor(joined * (config.window_seconds - 1)).astype(np.int64)

    seeking = _draw_seeking(rng, gender)
    min_age = np.maximum(MIN_AGE, age - rng.integers(1, 9, size=n)).astype(np.int16)
    max_age = np.minimum(MAX_SOUGHT_AGE, age + rng.integers(2, 13, size=n))
    has_limit = rng.random(n) >= config.no_distance_limit_share
    limit = rng.choice(DISTANCE_LIMITS_KM, size=n, p=DISTANCE_LIMIT_SHARES)
    max_distance_km = np.where(has_limit, limit, NO_DISTANCE_LIMIT).astype(np.int32)

    name_index = rng.integers(0, 1_000, size=n).astype(np.int16)
    initial = rng.integers(0, 26, size=n).astype(np.int8)
    bio_index = rng.integers(0, len(BIO_ENDINGS), size=n).astype(np.int8)
    return SyntheticMembers(
        gender=gender,
        age_years=age,
        birth_offset_days=birth_offset,
        city=city,
        latitude=latitude,
        longitude=longitude,
        interests=interests,
        tribe=tribe,
        preferred_tribe=preferred_tribe,
        attractiveness=attractiveness,
        generosity=generosity,
        is_visible=is_visible,
        created_at_s=created_at_s,
        last_active_at_s=created_at_s.copy(),
        seeking=seeking,
        min_age=min_age,
        max_age=max_age.astype(np.int16),
        max_distance_km=max_distance_km,
        name_index=name_index,
        initial=initial,
        bio_index=bio_index,
    )


# Per own gender: (sought genders, probability). Mostly the opposite gender.
_SEEKING_OPTIONS = {
    FEMALE: (
        ((MALE,), 0.80),
        ((FEMALE, MALE), 0.12),
        ((FEMALE,), 0.05),
        ((FEMALE, MALE, NONBINARY), 0.03),
    ),
    MALE: (
        ((FEMALE,), 0.80),
        ((FEMALE, MALE), 0.12),
        ((MALE,), 0.05),
        ((FEMALE, MALE, NONBINARY), 0.03),
    ),
    NONBINARY: (
        ((FEMALE, MALE, NONBINARY), 0.5),
        ((FEMALE,), 0.2),
        ((MALE,), 0.2),
        ((NONBINARY,), 0.1),
    ),
}


def _draw_seeking(rng: np.random.Generator, gender: np.ndarray) -> np.ndarray:
    seeking = np.zeros((gender.shape[0], 3), dtype=bool)
    u = rng.random(gender.shape[0])
    for own, options in _SEEKING_OPTIONS.items():
        thresholds = np.cumsum([share for _, share in options])
        option = np.minimum(
            np.searchsorted(thresholds, u, side="right"), len(options) - 1
        )
        for index, (sought, _) in enumerate(options):
            chosen = (gender == own) & (option == index)
            for g in sought:
                seeking[chosen, g] = True
    return seeking


def _with_last_activity(
    rng: np.random.Generator,
    members: SyntheticMembers,
    interactions: SyntheticInteractions,
    config: SyntheticConfig,
) -> SyntheticMembers:
    last_action = members.created_at_s.copy()
    np.maximum.at(last_action, interactions.actor, interactions.created_at_s)
    linger = rng.exponential(SECONDS_PER_DAY, size=members.n).astype(np.int64)
    last_active = np.minimum(last_action + linger, config.window_seconds - 1)
    return _replace(members, last_active_at_s=np.maximum(last_active, last_action))


def _replace(members: SyntheticMembers, **changes) -> SyntheticMembers:
    fields = {name: getattr(members, name) for name in members.__dataclass_fields__}
    fields.update(changes)
    return SyntheticMembers(**fields)


# --- interactions ------------------------------------------------------------------


def _empty_interactions() -> SyntheticInteractions:
    return SyntheticInteractions(
        actor=np.zeros(0, dtype=np.int32),
        target=np.zeros(0, dtype=np.int32),
        kind=np.zeros(0, dtype=np.int8),
        created_at_s=np.zeros(0, dtype=np.int64),
        like_probability=np.zeros(0, dtype=np.float32),
    )


def _rank_within_runs(groups: np.ndarray) -> np.ndarray:
    """Position of each element inside its run of equal, contiguous ``groups``."""
    if groups.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    lengths = np.diff(np.r_[starts, groups.shape[0]])
    return np.arange(groups.shape[0]) - np.repeat(starts, lengths)


def _draw_interactions(
    rng: np.random.Generator,
    members: SyntheticMembers,
    per_member: int,
    config: SyntheticConfig,
) -> SyntheticInteractions:
    n = members.n
    if n < 2 or per_member == 0:
        return _empty_interactions()

    activity = rng.gamma(2.0, per_member / 2.0, size=n)
    quota = np.clip(np.round(activity), 1, 4 * per_member).astype(np.int64)
    reply_quota = np.round(quota * config.reply_share).astype(np.int64)
    first_quota = quota - reply_quota

    # Over-draw so that duplicates, self pairs and the top-up reserve are covered.
    draws = np.ceil(quota * 1.3).astype(np.int64) + 4
    actor = np.repeat(np.arange(n, dtype=np.int64), draws)
    target = _draw_preferred_candidates(rng, members, actor)
    explore = rng.random(actor.shape[0]) < config.exploration_share
    target[explore] = rng.integers(0, n, size=int(explore.sum()))

    # Keep the first draw of each pair, in draw order (still grouped by actor).
    _, first = np.unique(actor * n + target, return_index=True)
    keep = np.zeros(actor.shape[0], dtype=bool)
    keep[first] = True
    keep &= actor != target
    actor, target = actor[keep], target[keep]
    rank = _rank_within_runs(actor)

    # 1. Preference-driven views.
    first_view = rank < first_quota[actor]
    a1, t1 = actor[first_view], target[first_view]
    time1 = _view_times(
        rng, np.maximum(members.created_at_s[a1], members.created_at_s[t1]), config
    )
    kind1, prob1 = _decide(rng, members, a1, t1, config)

    # 2. Replies: members who were liked view their admirer after the like.
    seen = np.sort(a1 * n + t1)
    liked = np.isin(kind1, POSITIVE_KIND_CODES)
    a2, t2, after = t1[liked], a1[liked], time1[liked]
    unseen = ~_sorted_contains(seen, a2 * n + t2)
    a2, t2, after = a2[unseen], t2[unseen], after[unseen]
    shuffled = rng.permutation(a2.shape[0])
    by_actor = shuffled[np.argsort(a2[shuffled], kind="stable")]
    a2, t2, after = a2[by_actor], t2[by_actor], after[by_actor]
    within_quota = _rank_within_runs(a2) < reply_quota[a2]
    a2, t2, after = a2[within_quota], t2[within_quota], after[within_quota]
    time2 = _view_times(rng, np.minimum(after + 1, config.window_seconds - 1), config)

    # 3. Top-up from the reserve draws for members with too few replies.
    shortfall = quota - np.bincount(a1, minlength=n) - np.bincount(a2, minlength=n)
    reserve = ~first_view
    a3, t3 = actor[reserve], target[reserve]
    fresh = ~_sorted_contains(np.sort(a2 * n + t2), a3 * n + t3)
    a3, t3 = a3[fresh], t3[fresh]
    wanted = _rank_within_runs(a3) < shortfall[a3]
    a3, t3 = a3[wanted], t3[wanted]
    time3 = _view_times(
        rng, np.maximum(members.created_at_s[a3], members.created_at_s[t3]), config
    )

    later_actor = np.concatenate([a2, a3])
    later_target = np.concatenate([t2, t3])
    kind23, prob23 = _decide(rng, members, later_actor, later_target, config)

    actor = np.concatenate([a1, later_actor])
    target = np.concatenate([t1, later_target])
    created = np.concatenate([time1, time2, time3])
    kind = np.concatenate([kind1, kind23])
    prob = np.concatenate([prob1, prob23])
    by_time = np.lexsort((target, actor, created))
    return SyntheticInteractions(
        actor=actor[by_time].astype(np.int32),
        target=target[by_time].astype(np.int32),
        kind=kind[by_time],
        created_at_s=created[by_time],
        like_probability=prob[by_time],
    )


def _sorted_contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if sorted_keys.shape[0] == 0:
        return np.zeros(keys.shape[0], dtype=bool)
    slot = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.shape[0] - 1)
    return sorted_keys[slot] == keys


def _view_times(
    rng: np.random.Generator, earliest: np.ndarray, config: SyntheticConfig
) -> np.ndarray:
    """Uniform integer seconds in [earliest, window end)."""
    span = config.window_seconds - earliest
    return earliest + np.floor(rng.random(earliest.shape[0]) * span).astype(np.int64)


def _draw_preferred_candidates(
    rng: np.random.Generator,
    members: SyntheticMembers,
    actor: np.ndarray,
    block: int = 20_000,
) -> np.ndarray:
    """For each entry of ``actor`` (sorted), one member uniformly drawn among those
    matching the actor's sought genders, age range and reachable cities (-1 if none).

    Members are sorted by (city, gender, age) so each (city, gender, age range) is one
    contiguous slice; an actor's eligible set is a union of at most 3*C slices, and a
    uniform draw over it is a search in the slices' cumulative sizes.
    """
    n_cities = len(CITIES)
    group = members.city.astype(np.int64) * 3 + members.gender
    key = group * _AGE_SLOTS + (members.age_years - MIN_AGE)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    distances = city_distances_km()
    groups = np.arange(n_cities * 3, dtype=np.int64)
    result = np.empty(actor.shape[0], dtype=np.int64)
    bounds = np.searchsorted(actor, np.arange(0, members.n + block, block))

    for start_member in range(0, members.n, block):
        ids = np.arange(start_member, min(start_member + block, members.n))
        limit = members.max_distance_km[ids]
        reachable = (limit[:, None] == NO_DISTANCE_LIMIT) | (
            distances[members.city[ids]] <= limit[:, None]
        )
        allowed = (reachable[:, :, None] & members.seeking[ids][:, None, :]).reshape(
            len(ids), -1
        )
        low = groups[None, :] * _AGE_SLOTS + (members.min_age[ids, None] - MIN_AGE)
        high = groups[None, :] * _AGE_SLOTS + (members.max_age[ids, None] - MIN_AGE)
        first = np.searchsorted(sorted_key, low, side="left")
        sizes = (np.searchsorted(sorted_key, high, side="right") - first) * allowed

        flat_sizes = sizes.ravel()
        cumulative = np.cumsum(flat_sizes)
        before = cumulative - flat_sizes
        row_base = before[:: sizes.shape[1]]
        totals = sizes.sum(axis=1)

        lo, hi = bounds[start_member // block], bounds[start_member // block + 1]
        local = actor[lo:hi] - start_member
        total = totals[local]
        offset = np.floor(rng.random(local.shape[0]) * total).astype(np.int64)
        position = row_base[local] + offset
        slice_index = np.minimum(
            np.searchsorted(cumulative, position, side="right"), len(cumulative) - 1
        )
        sorted_position = first.ravel()[slice_index] + position - before[slice_index]
        picked = order[np.minimum(sorted_position, members.n - 1)]
        result[lo:hi] = np.where(total > 0, picked, -1)

    missing = result < 0  # nobody matches the preferences: anyone will do
    result[missing] = rng.integers(0, members.n, size=int(missing.sum()))
    return result


def _interest_bits(interests: np.ndarray) -> np.ndarray:
    weights = np.left_shift(
        np.uint64(1), np.arange(interests.shape[1], dtype=np.uint64)
    )
    return (interests.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def interest_jaccard(
    members: SyntheticMembers, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """(m,) float64 Jaccard similarity of the interest sets of members a[i] and b[i]."""
    bits = _interest_bits(members.interests)
    both = np.bitwise_count(bits[a] & bits[b]).astype(np.float64)
    either = np.bitwise_count(bits[a] | bits[b]).astype(np.float64)
    return both / np.maximum(either, 1.0)


def within_preferences(
    members: SyntheticMembers, actor: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """(m,) bool: target's gender is sought by actor and target's age is in range."""
    age = members.age_years[target]
    return (
        members.seeking[actor, members.gender[target]]
        & (age >= members.min_age[actor])
        & (age <= members.max_age[actor])
    )


def like_probability(
    members: SyntheticMembers,
    actor: np.ndarray,
    target: np.ndarray,
    config: SyntheticConfig | None = None,
) -> np.ndarray:
    """(m,) float64 planted probability that actor[i] likes target[i]."""
    config = config or SyntheticConfig()
    logit = (
        config.tribe_weight * (members.tribe[target] == members.preferred_tribe[actor])
        + config.attractiveness_weight * members.attractiveness[target]
        + config.overlap_weight * interest_jaccard(members, actor, target)
        + members.generosity[actor]
        - config.outside_preferences_penalty
        * ~within_preferences(members, actor, target)
        - config.like_bias
    )
    return 1.0 / (1.0 + np.exp(-logit))


def _decide(
    rng: np.random.Generator,
    members: SyntheticMembers,
    actor: np.ndarray,
    target: np.ndarray,
    config: SyntheticConfig,
) -> tuple[np.ndarray, np.ndarray]:
    probability = like_probability(members, actor, target, config)
    liked = rng.random(actor.shape[0]) < probability
    super_liked = liked & (rng.random(actor.shape[0]) < config.super_like_share)
    blocked = ~liked & (rng.random(actor.shape[0]) < config.block_rate)
    kind = np.full(actor.shape[0], DISLIKE, dtype=np.int8)
    kind[liked] = LIKE
    kind[super_liked] = SUPER_LIKE
    kind[blocked] = BLOCK
    return kind, probability.astype(np.float32)
