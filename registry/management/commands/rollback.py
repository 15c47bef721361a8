from django.core.management.base import BaseCommand, CommandError

from config.api import ApplicationError
from registry.management.commands.promote import cli_actor_label
from registry.models import ModelKind
from registry.services import activation_summary, model_rollback


class Command(BaseCommand):
    help = (
        "Re-activate the version of KIND that served before the current one, "
        "exactly as the admin's roll back action does."
    )

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=ModelKind.values)
        parser.add_argument("--reason", default="", help="recorded in the audit log")

    def handle(self, *args, kind, reason, **options):
        try:
            activation = model_rollback(
                kind=kind, actor=None, actor_label=cli_actor_label(), reason=reason
            )
        except ApplicationError as error:
            raise CommandError(error.message) from error
        self.stdout.write(self.style.SUCCESS(activation_summary(activation)))
