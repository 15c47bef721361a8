from django.contrib.auth.validators import UnicodeUsernameValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Gender, Preferences, Profile
from config.fields import (
    JsonBooleanField,
    JsonCharField,
    JsonFloatField,
    JsonIntegerField,
)
from interactions.models import InteractionKind, MatchEndReason

MAX_INTEREST_LENGTH = 40
# Upper bound on what is read before normalisation (deduplication may shrink it).
MAX_RAW_INTERESTS = 100
AGE_LIMITS = {"min_value": 18, "max_value": 120}


# --- Input ------------------------------------------------------------------------
class PreferencesInputSerializer(serializers.Serializer):
    """Every field optional: what is left out keeps its default (or current) value."""

    seeking_genders = serializers.ListField(
        child=serializers.ChoiceField(choices=Gender.choices),
        allow_empty=False,
        # Also stated in the schema (minItems), where allow_empty is not.
        min_length=1,
        max_length=10,
        required=False,
    )
    min_age = JsonIntegerField(**AGE_LIMITS, required=False)
    max_age = JsonIntegerField(**AGE_LIMITS, required=False)
    max_distance_km = JsonIntegerField(
        min_value=1, max_value=20_000, allow_null=True, required=False
    )


class ProfileFieldsInputSerializer(serializers.Serializer):
    display_name = JsonCharField(max_length=80)
    birth_date = serializers.DateField()
    gender = serializers.ChoiceField(choices=Gender.choices)
    city = JsonCharField(max_length=120, allow_blank=True, required=False)
    latitude = JsonFloatField(
        min_value=-90, max_value=90, allow_null=True, required=False
    )
    longitude = JsonFloatField(
        min_value=-180, max_value=180, allow_null=True, required=False
    )
    bio = JsonCharField(max_length=2000, allow_blank=True, required=False)
    interests = serializers.ListField(
        child=JsonCharField(max_length=MAX_INTEREST_LENGTH, allow_blank=True),
        max_length=MAX_RAW_INTERESTS,
        required=False,
    )


class AccountCreateInputSerializer(ProfileFieldsInputSerializer):
    username = JsonCharField(max_length=150, validators=[UnicodeUsernameValidator()])
    password = JsonCharField(max_length=128, write_only=True, trim_whitespace=False)
    preferences = PreferencesInputSerializer(required=False)


class ProfileUpdateInputSerializer(ProfileFieldsInputSerializer):
    """Used with ``partial=True``: every field is optional."""

    is_visible = JsonBooleanField(required=False)
    preferences = PreferencesInputSerializer(required=False)


class TokenCreateInputSerializer(serializers.Serializer):
    username = JsonCharField(max_length=150)
    password = JsonCharField(max_length=128, write_only=True, trim_whitespace=False)


class AccountDeleteInputSerializer(serializers.Serializer):
    password = JsonCharField(
        max_length=128,
        write_only=True,
        trim_whitespace=False,
        help_text="The member's current password, confirming the deletion.",
    )


# --- Output -----------------------------------------------------------------------
class PreferencesOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Preferences
        fields = ["seeking_genders", "min_age", "max_age", "max_distance_km"]


class OwnProfileOutputSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    age = serializers.IntegerField()
    preferences = serializers.SerializerMethodField()

    class Meta:
        model = Profile
        fields = [
            "user_id",
            "username",
            "display_name",
            "birth_date",
            "age",
            "gender",
            "city",
            "latitude",
            "longitude",
            "bio",
            "interests",
            "is_visible",
            "created_at",
            "updated_at",
            "last_active_at",
            "preferences",
        ]

    @extend_schema_field(PreferencesOutputSerializer(allow_null=True))
    def get_preferences(self, profile: Profile) -> dict | None:
        try:
            preferences = profile.user.preferences
        except Preferences.DoesNotExist:
            return None
        return PreferencesOutputSerializer(preferences).data


class PublicProfileOutputSerializer(serializers.ModelSerializer):
    age = serializers.IntegerField()

    class Meta:
        model = Profile
        fields = [
            "user_id",
            "display_name",
            "age",
            "gender",
            "city",
            "bio",
            "interests",
        ]


class AccountOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    profile = OwnProfileOutputSerializer()


class TokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField()


# --- The data export (GET /api/v1/accounts/me/export/) ----------------------------
# The view streams plain rows (see ``accounts.api.views``); these serializers render
# the account, profile and preferences, and describe every part in the schema.
class ExportAccountSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField(allow_blank=True)
    first_name = serializers.CharField(allow_blank=True)
    last_name = serializers.CharField(allow_blank=True)
    date_joined = serializers.DateTimeField()
    last_login = serializers.DateTimeField(allow_null=True)


class ExportProfileSerializer(OwnProfileOutputSerializer):
    # In the export, the account and the preferences have parts of their own.
    username = None
    preferences = None

    class Meta(OwnProfileOutputSerializer.Meta):
        fields = [
            name
            for name in OwnProfileOutputSerializer.Meta.fields
            if name not in ("username", "preferences")
        ]


class ExportInteractionSerializer(serializers.Serializer):
    target = serializers.IntegerField(help_text="The member the verdict is about.")
    kind = serializers.ChoiceField(choices=InteractionKind.choices)
    context = serializers.DictField(child=serializers.JSONField())
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ExportMatchSerializer(serializers.Serializer):
    user_id = serializers.IntegerField(help_text="The other member of the match.")
    matched_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    end_reason = serializers.ChoiceField(
        choices=MatchEndReason.choices, allow_blank=True, help_text="Empty: active."
    )


class ExportImpressionSerializer(serializers.Serializer):
    request_id = serializers.CharField()
    shown_user_id = serializers.IntegerField()
    position = serializers.IntegerField()
    score = serializers.FloatField(allow_null=True)
    sources = serializers.ListField(child=serializers.CharField())
    strategy = serializers.CharField()
    model_versions = serializers.DictField(child=serializers.IntegerField())
    experiment = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class ExportFeaturesSerializer(serializers.Serializer):
    feature_version = serializers.CharField()
    feature_set = serializers.DictField(child=serializers.JSONField())
    computed_at = serializers.DateTimeField()


class ExportEmbeddingSerializer(serializers.Serializer):
    model_version = serializers.IntegerField(help_text="The embedding model version.")
    created_at = serializers.DateTimeField()
    vector = serializers.ListField(child=serializers.FloatField())


class AccountExportOutputSerializer(serializers.Serializer):
    """Everything Kindred stores about the member (``accounts.selectors.
    account_export``), oldest first in every list."""

    exported_at = serializers.DateTimeField()
    account = ExportAccountSerializer()
    profile = ExportProfileSerializer(allow_null=True)
    preferences = PreferencesOutputSerializer(allow_null=True)
    interactions = ExportInteractionSerializer(
        many=True, help_text="The verdicts the member gave."
    )
    matches = ExportMatchSerializer(many=True, help_text="Active and ended.")
    impressions = ExportImpressionSerializer(
        many=True, help_text="Every member shown to the member, where and by what."
    )
    features = ExportFeaturesSerializer(many=True)
    embeddings = ExportEmbeddingSerializer(many=True)
