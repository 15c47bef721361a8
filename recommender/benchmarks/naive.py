"""The naive baseline of the recommendation endpoint, for the endpoint benchmark only.

What a first implementation would do on every request: the hard filters as one SQL
query over profiles and preferences (gender, both ages, visibility, active account,
no earlier interaction, no block), the distance rule in Python, then the embedding
rows of every remaining candidate read from the database and scored by cosine
similarity (viewer's taste vector against each candidate's appeal vector) in Python,
best ``limit`` returned. No in-memory member store, no index, no ranking model, no
cache.

Mounted at ``/api/v1/bench/naive-recommendations/`` only by the benchmark's own
URLconf (``recommender.benchmarks.urls``), which the endpoint benchmark gives the
gunicorn it starts (``DJANGO_ROOT_URLCONF``). Never exposed by the project's URLs.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
from django.db.models import Q
from django.utils import timezone
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Profile, age_on
from config.api import ApplicationError
from interactions.models import Interaction
from recommender.models import UserEmbedding
from registry.selectors import model_get_active


class NaiveQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=100, default=20)


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def _km(lat1, lon1, lat2, lon2) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(a)))


def naive_recommendations(*, user, limit: int) -> list[dict]:
    today = timezone.localdate()
    viewer = (
        Profile.objects.select_related("user__preferences")
        .filter(user_id=user.pk)
        .first()
    )
    if viewer is None:
        raise ApplicationError("Create your profile first.", status_code=404)
    prefs = viewer.user.preferences
    viewer_age = age_on(viewer.birth_date, today)
    interacted = Interaction.objects.filter(actor_id=user.pk).values("target_id")
    blockers = Interaction.objects.filter(target_id=user.pk, kind="block").values(
        "actor_id"
    )
    candidates = (
        Profile.objects.filter(
            is_visible=True,
            user__is_active=True,
            gender__in=list(prefs.seeking_genders or []),
            birth_date__gt=_years_before(today, prefs.max_age + 1),
            birth_date__lte=_years_before(today, prefs.min_age),
            user__preferences__seeking_genders__contains=[viewer.gender],
            user__preferences__min_age__lte=viewer_age,
            user__preferences__max_age__gte=viewer_age,
        )
        .exclude(user_id=user.pk)
        .exclude(user_id__in=interacted)
        .exclude(user_id__in=blockers)
        .values_list(
            "user_id",
            "display_name",
            "birth_date",
            "city",
            "latitude",
            "longitude",
            "interests",
            "user__preferences__max_distance_km",
        )
    )
    allowed = {}
    for uid, name, birth, city, lat, lon, interests, their_limit in candidates:
        if viewer.latitude is not None and lat is not None:
            km = _km(viewer.latitude, viewer.longitude, lat, lon)
            if prefs.max_distance_km is not None and km > prefs.max_distance_km:
                continue
            if their_limit is not None and km > their_limit:
                continue
        allowed[uid] = (name, birth, city, interests)
    model = model_get_active(kind="embedding")
    if model is None or not allowed:
        return []
    vectors = dict(
        UserEmbedding.objects.filter(model=model)
        .filter(Q(user_id=user.pk) | Q(user_id__in=list(allowed)))
        .values_list("user_id", "vector")
    )
    if user.pk not in vectors:
        return []
    mine = np.frombuffer(vectors.pop(user.pk), dtype="<f4")
    d = mine.shape[0] // 2
    taste = mine[:d] / (np.linalg.norm(mine[:d]) or 1.0)
    scored = []
    for uid, blob in vectors.items():
        appeal = np.frombuffer(blob, dtype="<f4")[d:]
        norm = float(np.linalg.norm(appeal)) or 1.0
        scored.append((float(taste @ appeal) / norm, uid))
    scored.sort(reverse=True)
    results = []
    for rank, (score, uid) in enumerate(scored[:limit], start=1):
        name, birth, city, interests = allowed[uid]
        results.append(
            {
                "user_id": uid,
                "display_name": name,
                "age": age_on(birth, today),
                "city": city,
                "interests": interests,
                "score": round(score, 6),
                "rank": rank,
            }
        )
    return results


class NaiveRecommendationApi(APIView):
    """GET: the naive baseline's recommendations (benchmark only). X-Process-Time
    comes from config.middleware, as on the real endpoint."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["X-Cache"] = "miss"
        response["X-Recommendation-Strategy"] = "naive"
        return response

    def get(self, request):
        query = NaiveQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        results = naive_recommendations(
            user=request.user, limit=query.validated_data["limit"]
        )
        return Response({"results": results, "strategy": "naive"})
