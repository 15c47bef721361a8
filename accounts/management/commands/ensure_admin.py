"""Create (or reset) the admin login and print it: the quick start's last step."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the superuser 'admin' if missing and print its credentials."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--reset-password",
            action="store_true",
            help="Set a new password even if the user exists (printed once).",
        )

    def handle(self, *args, username: str, reset_password: bool, **options):
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if not (created or reset_password):
            self.stdout.write(
                f"Admin '{username}' exists; password unchanged "
                "(use --reset-password to print a new one)."
            )
            return
        # ADMIN_PASSWORD lets scripts and tests choose it; otherwise a random one.
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        self.stdout.write(
            self.style.SUCCESS(f"Admin login: username={username} password={password}")
        )
