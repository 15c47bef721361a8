"""Serving recommendations: answer a member's request and log its impressions."""

from __future__ import annotations

from recommender.impressions import impressions_log


def recommendations_serve(*, user, limit: int, request_id: str | None = None):
    """Answer a member's recommendation request and log its impressions.

    The answer comes from ``recommender.selectors.recommendations_get`` (cache or
    engine); the impressions are handed to :func:`impressions_log`, which never fails
    the request.
    """
    from recommender.selectors import recommendations_get

    page = recommendations_get(user=user, limit=limit, request_id=request_id)
    impressions_log(user_id=user.pk, page=page)
    return page
