from django.conf import settings
from django.db import models
from django.db.models import F, Q


class InteractionKind(models.TextChoices):
    LIKE = "like", "Like"
    DISLIKE = "dislike", "Dislike"
    SUPER_LIKE = "super_like", "Super like"
    BLOCK = "block", "Block"


POSITIVE_KINDS = frozenset({InteractionKind.LIKE, InteractionKind.SUPER_LIKE})


class Interaction(models.Model):
    """One member's current verdict on another: one row per (actor, target)."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="interactions_given",
    )
    target = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="interactions_received",
    )
    kind = models.CharField(max_length=16, choices=InteractionKind.choices)
    context = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["actor", "target"], name="interaction_one_per_pair"
            ),
            models.CheckConstraint(
                condition=~Q(actor=F("target")), name="interaction_not_self"
            ),
            # Code that bypasses the service (bulk updates, imports, SQL) must not
            # store a kind that filters, matches and training would misread.
            models.CheckConstraint(
                condition=Q(kind__in=InteractionKind.values),
                name="interaction_kind_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["actor", "created_at"], name="interaction_actor_time"),
            models.Index(fields=["target", "kind"], name="interaction_target_kind"),
            models.Index(fields=["created_at"], name="interaction_time"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_id} {self.kind} {self.target_id}"


class MatchEndReason(models.TextChoices):
    UNLIKE = "unlike", "Unlike"
    BLOCK = "block", "Block"


class Match(models.Model):
    """A mutual like, stored once per unordered pair (user_low < user_high).

    A block or an unlike ends it (``ended_at``); a renewed mutual like reopens it.
    """

    user_low = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    user_high = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    matched_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(
        max_length=16, choices=MatchEndReason.choices, blank=True
    )

    class Meta:
        verbose_name_plural = "matches"
        constraints = [
            models.UniqueConstraint(
                fields=["user_low", "user_high"], name="match_one_per_pair"
            ),
            models.CheckConstraint(
                condition=Q(user_low__lt=F("user_high")), name="match_ordered_pair"
            ),
            models.CheckConstraint(
                condition=Q(end_reason__in=["", *MatchEndReason.values]),
                name="match_end_reason_valid",
            ),
        ]
        indexes = [
            models.Index(
                fields=["user_high"],
                condition=Q(ended_at__isnull=True),
                name="match_active_high",
            ),
            models.Index(
                fields=["user_low"],
                condition=Q(ended_at__isnull=True),
                name="match_active_low",
            ),
        ]

    def __str__(self) -> str:
        state = "active" if self.ended_at is None else f"ended ({self.end_reason})"
        return f"{self.user_low_id} ♥ {self.user_high_id} ({state})"

    @property
    def is_active(self) -> bool:
        return self.ended_at is None
