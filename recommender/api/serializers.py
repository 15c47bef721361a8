from types import SimpleNamespace

from rest_framework import serializers

from config.api import query_integer
from recommender.selectors import DEFAULT_LIMIT, MAX_LIMIT


# --- Input ------------------------------------------------------------------------
class RecommendationQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        min_value=1,
        max_value=MAX_LIMIT,
        default=DEFAULT_LIMIT,
        help_text=f"How many members to recommend (1..{MAX_LIMIT}).",
    )

    def to_internal_value(self, data):
        return {"limit": recommendation_limit(data)}


def recommendation_limit(query_params) -> int:
    """``?limit=`` of a recommendation request (the field above is its schema). As
    strict as ?page=: present but empty ("?limit="), or anything but plain digits
    from 1 to ``MAX_LIMIT``, raises a ValidationError naming it (a 400)."""
    params = SimpleNamespace(query_params=query_params)
    return query_integer(params, "limit", default=DEFAULT_LIMIT, maximum=MAX_LIMIT)


# --- Output -----------------------------------------------------------------------
class RecommendationOutputSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    display_name = serializers.CharField()
    age = serializers.IntegerField()
    city = serializers.CharField()
    interests = serializers.ListField(child=serializers.CharField())
    score = serializers.FloatField()
    rank = serializers.IntegerField(help_text="1 for the first recommendation.")
    sources = serializers.ListField(
        child=serializers.CharField(),
        help_text="Candidate sources that proposed this member: collaborative, "
        "content, popular, explore.",
    )
    reason = serializers.CharField(help_text="Why, in a few words.")


class ExperimentOutputSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Empty when no A/B test runs.")
    arm = serializers.CharField(help_text='"control", "challenger" or empty.')


class RecommendationListOutputSerializer(serializers.Serializer):
    """Serializes a ``recommender.selectors.RecommendationPage``."""

    results = RecommendationOutputSerializer(many=True)
    strategy = serializers.CharField(
        help_text="full, unranked, content_popularity or random: the pipeline level "
        "that produced the answer."
    )
    model_versions = serializers.DictField(child=serializers.IntegerField())
    experiment = ExperimentOutputSerializer()
    request_id = serializers.CharField()


def recommendation_list_data(page) -> dict:
    """``RecommendationListOutputSerializer(page).data``, built directly.

    The serializer stays the schema; on the hot path its field-by-field work (a
    deep copy of the declared fields per instance, one call per value) was 10 % of
    a cache hit's CPU (py-spy, issue 16). The same conversions, the same keys in
    the same order (tests hold the two to the same output).
    """
    return {
        "results": [
            {
                "user_id": int(result["user_id"]),
                "display_name": str(result["display_name"]),
                "age": int(result["age"]),
                "city": str(result["city"]),
                "interests": [str(x) for x in result["interests"]],
                "score": None if result["score"] is None else float(result["score"]),
                "rank": int(result["rank"]),
                "sources": [str(x) for x in result["sources"]],
                "reason": str(result["reason"]),
            }
            for result in page.results
        ],
        "strategy": str(page.strategy),
        "model_versions": {str(k): int(v) for k, v in page.model_versions.items()},
        "experiment": {
            "name": str(page.experiment["name"]),
            "arm": str(page.experiment["arm"]),
        },
        "request_id": str(page.request_id),
    }
