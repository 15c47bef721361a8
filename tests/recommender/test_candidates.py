"""Candidate sources: tagging, merging and the cold start."""

import numpy as np
import pytest

from accounts.models import Gender
from recommender.ml.candidates import SOURCES, Candidates, interest_jaccard
from tests.accounts.factories import member
from tests.recommender.serving_fixtures import open_members, years_ago

pytestmark = pytest.mark.django_db


def test_a_member_with_history_gets_collaborative_candidates(engine, trained):
    for user in open_members():
        result = engine.recommendations_compute(user=user, limit=50)

        assert result.strategy == "full"
        tags = [set(r.sources) for r in result.results]
        assert any("collaborative" in t for t in tags), user.username
        assert all(t and t <= set(SOURCES) for t in tags)


def test_a_brand_new_member_gets_content_candidates_and_no_collaborative(
    engine, trained
):
    newcomer = member(
        gender=Gender.FEMALE,
        birth_date=years_ago(29),
        interests=["hiking", "travel", "cooking"],
        latitude=None,
        longitude=None,
        preferences={"seeking_genders": ["male"], "min_age": 22, "max_age": 40},
    )

    result = engine.recommendations_compute(user=newcomer, limit=50)

    assert result.strategy == "full"
    assert result.results
    sources = [set(r.sources) for r in result.results]
    assert not any("collaborative" in s for s in sources)
    assert sum("content" in s for s in sources) >= len(sources) // 2


def test_popular_and_explore_sources_are_tagged_too(engine, trained):
    user = open_members(1)[0]

    result = engine.recommendations_compute(user=user, limit=100)

    every = set().union(*(r.sources for r in result.results))
    assert {"collaborative", "content", "popular"} <= every


def test_merged_candidates_carry_every_source_that_found_them():
    candidates = Candidates(
        positions=np.array([4, 9]),
        tags=np.array([0b0101, 0b0010], dtype=np.uint8),
        jaccard=np.zeros(2, np.float32),
        affinity=np.zeros(2, np.float32),
        reciprocal=np.zeros(2, np.float32),
        neighbours=np.zeros((2, 4), np.float32),
        liked_you=np.zeros(2, bool),
        score=np.zeros(2, np.float32),
    )

    assert candidates.sources_of(0) == ["collaborative", "popular"]
    assert candidates.sources_of(1) == ["content"]


def test_interest_jaccard_counts_shared_bits_over_the_union():
    bits = np.array([[0b1011], [0b0100], [0]], dtype=np.uint64)

    jaccard = interest_jaccard(bits, np.array([0b0011], dtype=np.uint64))

    assert jaccard.tolist() == pytest.approx([2 / 3, 0.0, 0.0])
