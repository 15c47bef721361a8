from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response

from config.api import CacheTolerantScopedRateThrottle
from interactions.api.serializers import (
    InteractionCreateInputSerializer,
    InteractionFilterSerializer,
    InteractionOutputSerializer,
    InteractionRecordedOutputSerializer,
    MatchOutputSerializer,
)
from interactions.selectors import interaction_list_given, match_list_active
from interactions.services import interaction_record


class InteractionListCreateApi(ListAPIView):
    serializer_class = InteractionOutputSerializer
    throttle_scope = "interactions"

    def get_throttles(self):
        # Recording verdicts is rate limited; reading one's own history is not.
        if self.request.method != "POST":
            return []
        return [CacheTolerantScopedRateThrottle()]

    def get_queryset(self):
        filters = InteractionFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        kind = filters.validated_data.get("kind") or None
        return interaction_list_given(actor=self.request.user, kind=kind)

    @extend_schema(parameters=[InteractionFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=InteractionCreateInputSerializer,
        responses={
            201: InteractionRecordedOutputSerializer,
            200: InteractionRecordedOutputSerializer,
        },
    )
    def post(self, request):
        serializer = InteractionCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        recorded = interaction_record(
            actor=request.user,
            target_id=data["target"],
            kind=data["kind"],
            context=data["context"],
        )
        code = status.HTTP_201_CREATED if recorded.created else status.HTTP_200_OK
        return Response(InteractionRecordedOutputSerializer(recorded).data, status=code)


class MatchListApi(ListAPIView):
    serializer_class = MatchOutputSerializer

    def get_queryset(self):
        return match_list_active(user=self.request.user)
