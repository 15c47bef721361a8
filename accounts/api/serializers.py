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
