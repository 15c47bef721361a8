"""Serializer fields for JSON request bodies that take exactly the JSON type the
OpenAPI schema states.

DRF's fields coerce, as suits HTML forms: ``CharField`` takes ``0``,
``IntegerField`` takes ``"5"``, ``FloatField`` takes ``true`` (1.0) and
``BooleanField`` takes ``0``, ``"yes"`` or ``"on"``. A JSON API whose schema says
"string", "integer", "number" or "boolean" should refuse the other types with a 400
naming the field, as the schema promises (and as schemathesis checks).
"""

from rest_framework import serializers


class JsonCharField(serializers.CharField):
    """A JSON string only."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class JsonIntegerField(serializers.IntegerField):
    """A JSON integer only (not a string of digits, a fraction or a boolean)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if isinstance(data, float) and not data.is_integer():
            self.fail("invalid")
        return super().to_internal_value(data)


class JsonFloatField(serializers.FloatField):
    """A JSON number only: ``true``/``false`` are not numbers (``float(True)`` is
    1.0), nor are strings."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class JsonBooleanField(serializers.BooleanField):
    """JSON ``true``/``false`` only."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data
