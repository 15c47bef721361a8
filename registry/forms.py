"""The admin's forms for serving changes: checked here, carried out by
``registry.services`` (see ``registry.admin``)."""

from django import forms
from django.core.validators import MaxValueValidator

from registry.models import MLModel

SERVING_FIELDS = ("is_active", "traffic_percent")


class MLModelServingForm(forms.ModelForm):
    """Validates a requested serving change before the services carry it out."""

    class Meta:
        model = MLModel
        fields = [*SERVING_FIELDS, "notes"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in SERVING_FIELDS:
            if name in self.fields:
                # Compare the submission with what the user saw, not with the
                # database: a stale form must not undo someone else's promotion.
                self.fields[name].show_hidden_initial = True
        if "traffic_percent" in self.fields:
            field = self.fields["traffic_percent"]
            field.validators.append(MaxValueValidator(100))
            field.widget.attrs["max"] = 100
            field.help_text = (
                "Share of members served by this inactive version as the A/B "
                "challenger; 0 stops the test."
            )

    def clean(self):
        cleaned_data = super().clean()
        is_active = cleaned_data.get("is_active", self.instance.is_active)
        traffic_percent = cleaned_data.get(
            "traffic_percent", self.instance.traffic_percent
        )
        if is_active and traffic_percent and "traffic_percent" in self.changed_data:
            self.add_error(
                "traffic_percent",
                "An active version serves everyone; only an inactive version can "
                "be the challenger.",
            )
        return cleaned_data


class MLModelAdminForm(MLModelServingForm):
    reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why; recorded in the activation log when is_active or traffic "
        "changes.",
    )
