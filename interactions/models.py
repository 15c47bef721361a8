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
    """One member's current verdict on another: one row per (actor, target).

    ``created_at`` is when the current verdict was given: a change of mind (another
    kind) re-dates the row, and the verdict it replaces is kept as an
    :class:`InteractionHistory` row. Training cuts its data by this time, so a
    verdict is never seen before it was made; ``updated_at`` moves with any write
    (a repeated verdict with a new context too).
    """

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


class InteractionHistory(models.Model):
    """A verdict that held from ``created_at`` until ``replaced_at``, when the
    member changed their mind (append-only; written by ``interaction_record``).

    With the pair's ``Interaction`` row it tells what the verdict was at any time:
    training data as of a past cut reads it (``recommender.data.interactions_load``).
    """

    interaction = models.ForeignKey(
        Interaction, on_delete=models.CASCADE, related_name="history"
    )
    kind = models.CharField(max_length=16, choices=InteractionKind.choices)
    context = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    replaced_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "interaction history"
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=InteractionKind.values),
                name="interaction_history_kind_valid",
            ),
            models.CheckConstraint(
                condition=Q(created_at__lte=F("replaced_at")),
                name="interaction_history_period",
            ),
        ]
        indexes = [
            models.Index(fields=["replaced_at"], name="interaction_history_replaced")
        ]

    def __str__(self) -> str:
        return f"{self.kind} until {self.replaced_at:%Y-%m-%d %H:%M:%S}"


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
