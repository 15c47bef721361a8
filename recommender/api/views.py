from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from accounts.authentication import ExpiringTokenAuthentication
from recommender.api.authentication import RecommendationHitAuthentication
from recommender.api.serializers import (
    RecommendationListOutputSerializer,
    RecommendationQuerySerializer,
    recommendation_list_data,
)
from recommender.hits import recommendations_hit_serve
from recommender.services.recommendations import recommendations_serve

RESPONSE_HEADERS = [
    OpenApiParameter(
        name,
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[200],
        required=True,
        description=description,
    )
    for name, description in (
        (
            "X-Model-Versions",
            'Versions that served, e.g. "embedding=3,ranking=5"; '
            '"none" without models.',
        ),
        ("X-Experiment", 'The A/B experiment and arm, or "none".'),
        ("X-Recommendation-Strategy", "full, unranked, content_popularity or random."),
        ("X-Cache", "hit or miss: whether the answer came from the member's cache."),
    )
]


def recommendation_headers(page) -> dict[str, str]:
    versions = ",".join(f"{k}={v}" for k, v in sorted(page.model_versions.items()))
    return {
        "X-Model-Versions": versions or "none",
        "X-Experiment": page.experiment_label or "none",
        "X-Recommendation-Strategy": page.strategy,
        "X-Cache": "hit" if page.cached else "miss",
    }


class RecommendationListApi(APIView):
    """Recommendations for the signed-in member. The request id is
    ``config.middleware``'s (the client's sane X-Request-ID, echoed, or a new one):
    the body's ``request_id`` equals the response's ``X-Request-ID`` header."""

    # The defaults (settings.REST_FRAMEWORK), except that a cache hit's token is
    # checked in the query that re-checks the hit (recommender.hits).
    authentication_classes = [
        RecommendationHitAuthentication if cls is ExpiringTokenAuthentication else cls
        for cls in api_settings.DEFAULT_AUTHENTICATION_CLASSES
    ]

    @extend_schema(
        parameters=[RecommendationQuerySerializer, *RESPONSE_HEADERS],
        responses={200: RecommendationListOutputSerializer},
    )
    def get(self, request):
        query = RecommendationQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        # A hit checked during authentication answers the same ?limit=: both
        # parse it with serializers.recommendation_limit.
        hit = getattr(request, "recommendation_hit", None)
        if hit is not None:
            page = recommendations_hit_serve(hit=hit)
        else:
            page = recommendations_serve(
                user=request.user,
                limit=query.validated_data["limit"],
                request_id=request.request_id,
            )
        data = recommendation_list_data(page)
        return Response(data, headers=recommendation_headers(page))
