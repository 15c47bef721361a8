import re
import time
import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from recommender.api.serializers import (
    RecommendationListOutputSerializer,
    RecommendationQuerySerializer,
)
from recommender.services import recommendations_serve

# A client's own request id is echoed only if it is this tame (it ends up in
# headers, logs and the impression log).
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_from(request) -> str:
    """The client's X-Request-ID when it is sane, else a new uuid4."""
    given = request.headers.get("X-Request-ID", "")
    return given if SANE_REQUEST_ID.fullmatch(given) else str(uuid.uuid4())


def recommendation_headers(page) -> dict[str, str]:
    versions = ",".join(f"{k}={v}" for k, v in sorted(page.model_versions.items()))
    return {
        "X-Model-Versions": versions or "none",
        "X-Experiment": page.experiment_label or "none",
        "X-Recommendation-Strategy": page.strategy,
        "X-Cache": "hit" if page.cached else "miss",
    }


class RecommendationListApi(APIView):
    """Every response, errors included, carries X-Request-ID and X-Process-Time."""

    def initial(self, request, *args, **kwargs):
        request.started_at = time.perf_counter()
        request.request_id = request_id_from(request)
        super().initial(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        request_id = getattr(request, "request_id", None) or request_id_from(request)
        started_at = getattr(request, "started_at", None) or time.perf_counter()
        response["X-Request-ID"] = request_id
        response["X-Process-Time"] = f"{time.perf_counter() - started_at:.6f}"
        return response

    @extend_schema(
        parameters=[
            RecommendationQuerySerializer,
            OpenApiParameter("X-Request-ID", OpenApiTypes.STR, OpenApiParameter.HEADER),
        ],
        responses={200: RecommendationListOutputSerializer},
    )
    def get(self, request):
        query = RecommendationQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = recommendations_serve(
            user=request.user,
            limit=query.validated_data["limit"],
            request_id=request.request_id,
        )
        data = RecommendationListOutputSerializer(page).data
        return Response(data, headers=recommendation_headers(page))
