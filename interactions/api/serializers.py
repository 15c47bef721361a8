from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Profile
from config.fields import JsonIntegerField
from interactions.models import Interaction, InteractionKind, Match

MAX_USER_ID = 2**63 - 1


# --- Input ------------------------------------------------------------------------
@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {},
        "nullable": True,
        "description": "Free-form JSON object (at most 4 KB), e.g. source, "
        "position, request_id, device; null is the same as {}.",
    }
)
class ContextField(serializers.JSONField):
    """Any JSON to DRF; the schema says what the service accepts: an object or
    null."""


class InteractionCreateInputSerializer(serializers.Serializer):
    target = JsonIntegerField(min_value=1, max_value=MAX_USER_ID)
    kind = serializers.ChoiceField(choices=InteractionKind.choices)
    # Shape and size are checked by the service (a JSON object of at most 4 KB).
    context = ContextField(required=False, allow_null=True, default=dict)


class InteractionFilterSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=InteractionKind.choices, required=False, allow_blank=True
    )


# --- Output -----------------------------------------------------------------------
class InteractionOutputSerializer(serializers.ModelSerializer):
    target = serializers.IntegerField(source="target_id")

    class Meta:
        model = Interaction
        fields = ["id", "target", "kind", "context", "created_at", "updated_at"]


class InteractionRecordedOutputSerializer(serializers.Serializer):
    """Serializes the service's ``InteractionRecorded``: the row plus ``matched``."""

    id = serializers.IntegerField(source="interaction.id")
    target = serializers.IntegerField(source="interaction.target_id")
    kind = serializers.ChoiceField(
        source="interaction.kind", choices=InteractionKind.choices
    )
    context = serializers.JSONField(source="interaction.context")
    created_at = serializers.DateTimeField(source="interaction.created_at")
    updated_at = serializers.DateTimeField(source="interaction.updated_at")
    matched = serializers.BooleanField(
        help_text="Whether the pair has an active match after this call."
    )


class MemberSummaryOutputSerializer(serializers.ModelSerializer):
    age = serializers.IntegerField()

    class Meta:
        model = Profile
        fields = ["user_id", "display_name", "age", "city"]


class MatchOutputSerializer(serializers.ModelSerializer):
    member = serializers.SerializerMethodField(
        help_text="The other member of the match."
    )

    class Meta:
        model = Match
        fields = ["id", "matched_at", "member"]

    @extend_schema_field(MemberSummaryOutputSerializer(allow_null=True))
    def get_member(self, match: Match) -> dict | None:
        viewer_id = self.context["request"].user.pk
        other = match.user_high if match.user_low_id == viewer_id else match.user_low
        profile = getattr(other, "profile", None)
        if profile is None:
            return None
        return MemberSummaryOutputSerializer(profile).data
