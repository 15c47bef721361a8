"""The match rule, written once: which pairs make a ``Match``, how its pair is
ordered and when it was made.

* A pair is matched when both of its verdicts (one per direction) are positive: a
  like or a super like (``POSITIVE_KINDS``).
* A match is stored once per unordered pair, ``user_low`` < ``user_high``.
* It is dated by the later of its two positive verdicts: the moment the second like
  made the pair mutual.

``interaction_record`` applies it to one pair under row locks; the bulk writer
(``interactions.bulk``, for the importers and the demo seeder) to whole sets of
verdicts.
"""

from collections.abc import Hashable, Iterable
from typing import TypeVar

from interactions.models import POSITIVE_KINDS

At = TypeVar("At")


def match_pair(one_id: int, other_id: int) -> tuple[int, int]:
    """The pair as a ``Match`` stores it: ``(user_low, user_high)``."""
    return (one_id, other_id) if one_id < other_id else (other_id, one_id)


def match_is_mutual(kind: str, other_kind: str | None) -> bool:
    """Whether a pair whose verdicts are ``kind`` and ``other_kind`` (``None``: no
    verdict back) is matched."""
    return kind in POSITIVE_KINDS and other_kind in POSITIVE_KINDS


def match_time(at: At, other_at: At) -> At:
    """When a mutual pair matched, from the times of its two verdicts."""
    return max(at, other_at)


def mutual_pairs(
    verdicts: Iterable[tuple[int, int, str, At]],
) -> dict[tuple[int, int], At]:
    """``{(user_low, user_high): matched_at}`` of every matched pair among
    ``verdicts``, ``(actor, target, kind, at)`` with at most one verdict per
    ``(actor, target)`` (as ``Interaction`` stores them). ``at`` may be any ordered
    value (a datetime, seconds): it is what ``matched_at`` is computed from.

    Streams: only positive verdicts still waiting for their answer are held.
    """
    waiting: dict[Hashable, tuple[str, At]] = {}
    matched: dict[tuple[int, int], At] = {}
    for actor, target, kind, at in verdicts:
        if kind not in POSITIVE_KINDS:
            continue
        pair = match_pair(actor, target)
        other = waiting.pop(pair, None)
        if other is None:
            waiting[pair] = (kind, at)
        elif match_is_mutual(kind, other[0]):
            matched[pair] = match_time(at, other[1])
    return matched
