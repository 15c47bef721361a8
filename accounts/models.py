from datetime import date

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import F, Q
from django.utils import timezone


class User(AbstractUser):
    """A member (or a staff user). Custom from the first migration."""

    # API tokens issued before this moment are no longer valid (a password change
    # signs the member out of every client).
    password_changed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"

    def set_password(self, raw_password):
        super().set_password(raw_password)
        self.password_changed_at = timezone.now()


class Gender(models.TextChoices):
    FEMALE = "female", "Female"
    MALE = "male", "Male"
    NONBINARY = "nonbinary", "Non-binary"


class Profile(models.Model):
    """What other members see of a member; the primary key is the user's id."""

    user = models.OneToOneField(
        User, on_delete=models.CASCADE, primary_key=True, related_name="profile"
    )
    display_name = models.CharField(max_length=80)
    birth_date = models.DateField()
    gender = models.CharField(max_length=16, choices=Gender.choices)
    city = models.CharField(max_length=120, blank=True)
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    bio = models.TextField(blank=True, max_length=2000)
    interests = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_active_at = models.DateTimeField(null=True, blank=True)
    is_visible = models.BooleanField(default=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["gender", "birth_date"], name="profile_gender_birth_idx"
            ),
            models.Index(fields=["-last_active_at"], name="profile_last_active_idx"),
            models.Index(fields=["latitude", "longitude"], name="profile_location_idx"),
            models.Index(
                fields=["gender", "birth_date"],
                condition=Q(is_visible=True),
                name="profile_visible_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(latitude__isnull=True)
                | Q(latitude__gte=-90, latitude__lte=90),
                name="profile_latitude_range",
            ),
            models.CheckConstraint(
                condition=Q(longitude__isnull=True)
                | Q(longitude__gte=-180, longitude__lte=180),
                name="profile_longitude_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.user_id})"

    @property
    def age(self) -> int:
        return age_on(self.birth_date, date.today())


def age_on(birth_date: date, today: date) -> int:
    """Whole years between ``birth_date`` and ``today``."""
    before_birthday = (today.month, today.day) < (birth_date.month, birth_date.day)
    return today.year - birth_date.year - before_birthday


class Preferences(models.Model):
    """Whom a member wants to be shown; both sides' preferences must hold."""

    user = models.OneToOneField(
        User, on_delete=models.CASCADE, primary_key=True, related_name="preferences"
    )
    seeking_genders = models.JSONField(default=list, blank=True)
    min_age = models.PositiveSmallIntegerField(default=18)
    max_age = models.PositiveSmallIntegerField(default=99)
    # None: distance does not matter.
    max_distance_km = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "preferences"
        constraints = [
            models.CheckConstraint(
                condition=Q(min_age__gte=18), name="preferences_min_age_adult"
            ),
            models.CheckConstraint(
                condition=Q(min_age__lte=F("max_age")),
                name="preferences_age_range_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"Preferences of {self.user_id}"


class DeletionRequester(models.TextChoices):
    MEMBER = "member", "The member (API)"
    STAFF = "staff", "Staff (admin)"


class AccountDeletion(models.Model):
    """Append-only audit row of a deleted account, written in the deletion's
    transaction. It keeps no personal data: the id the account had, who asked, and
    how many rows of each kind went with it."""

    # A plain number, not a key: the user row is gone.
    user_id = models.PositiveBigIntegerField(db_index=True)
    requested_by = models.CharField(max_length=16, choices=DeletionRequester.choices)
    # The staff member who deleted it from the admin (None for a member's own).
    actor = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # {"accounts.Profile": 1, "interactions.Interaction": 12, …}
    rows_deleted = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"account {self.user_id} deleted ({self.requested_by})"
