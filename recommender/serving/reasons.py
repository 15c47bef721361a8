"""A result as the member sees it: the candidate's public facts and a short reason."""

from __future__ import annotations

import datetime as dt

from recommender.filters import MemberFacts
from recommender.ml.candidates import (
    COLLABORATIVE,
    CONTENT,
    EXPLORE,
    LIKED_YOU,
    NEIGHBOURS,
    POPULAR,
    Candidates,
)
from recommender.serving.results import Recommendation


def recommendation_build(
    candidate: MemberFacts,
    viewer: MemberFacts,
    candidates: Candidates,
    i: int,
    score: float,
    rank: int,
    new: bool,
    today: dt.date,
) -> Recommendation:
    """Candidate ``i`` of ``candidates`` (``candidate``'s fresh facts) at ``rank``."""
    interests = [str(x) for x in candidate.interests or []]
    return Recommendation(
        user_id=candidate.user_id,
        display_name=candidate.display_name,
        age=candidate.age_on(today),
        city=candidate.city,
        interests=interests,
        score=round(float(score), 6),
        rank=rank,
        sources=candidates.sources_of(i),
        reason=reason_for(int(candidates.tags[i]), viewer, candidate, interests, new),
    )


def reason_for(tags, viewer, candidate, interests, new) -> str:
    """Why the candidate is shown, from the sources that found them (``tags``)
    and what the two share."""
    mine = {_norm(x) for x in viewer.interests or []}
    shared = [x for x in interests if _norm(x) in mine]
    if tags & LIKED_YOU:
        return "a likely match"
    if tags & CONTENT and len(shared) >= 2:
        return f"likes {shared[0]} and {shared[1]} like you"
    if tags & (COLLABORATIVE | NEIGHBOURS):
        return "people with your taste liked them"
    if new:
        return "new here"
    if tags & POPULAR:
        near = viewer.city and viewer.city == candidate.city
        return "popular near you" if near else "popular right now"
    if shared:
        return f"likes {shared[0]} like you"
    if tags & EXPLORE:
        return "someone new to discover"
    return "matches what you are looking for"


def _norm(value) -> str:
    return " ".join(str(value).split()).lower()
