import getpass

from django.core.management.base import BaseCommand, CommandError

from config.api import ApplicationError
from registry.models import MLModel, ModelKind
from registry.services import activation_summary, model_activate


def cli_actor_label() -> str:
    """``"cli:<os user>"``, or ``"cli"`` where the OS user cannot be told."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


class Command(BaseCommand):
    help = (
        "Make VERSION the active model of KIND, exactly as the admin's promote "
        "action does (locked, logged in the activation log)."
    )

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=ModelKind.values)
        parser.add_argument("version", help="version number, e.g. 4 or v4")
        parser.add_argument("--reason", default="", help="recorded in the audit log")

    def handle(self, *args, kind, version, reason, **options):
        number = version.removeprefix("v").removeprefix("V")
        if not number.isdigit():
            raise CommandError(f"version: expected a number such as 4, got {version!r}")
        model = MLModel.objects.filter(kind=kind, version=int(number)).first()
        if model is None:
            raise CommandError(f"version: {kind} v{number} is not registered")
        try:
            activation = model_activate(
                model=model, actor=None, actor_label=cli_actor_label(), reason=reason
            )
        except ApplicationError as error:
            raise CommandError(error.message) from error
        self.stdout.write(self.style.SUCCESS(activation_summary(activation)))
