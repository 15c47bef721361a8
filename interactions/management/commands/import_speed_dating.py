"""``manage.py import_speed_dating PATH``: the Speed Dating Experiment as members,
preferences, likes/dislikes and matches."""

from django.core.management.base import BaseCommand, CommandError

from config.progress import ProgressPrinter
from interactions.importers import DEFAULT_BATCH_SIZE, ImportRefused
from interactions.management.commands.import_interactions import _refusal
from interactions.speed_dating import SPEED_DATING_NAMESPACE, speed_dating_import


class Command(BaseCommand):
    help = (
        "Import the Speed Dating Experiment (Fisman et al. 2006) CSV: participants "
        "as members sd_<iid> (gender, age, field, interests from the 17 activity "
        "ratings, a city per wave, seeking the opposite gender), each date's "
        "decision as a like (dec=1) or dislike (dec=0) timed in the wave's round "
        "order, and the matches. Running it again changes nothing; rows it cannot "
        "use are skipped and reported."
    )

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--namespace", default=SPEED_DATING_NAMESPACE)
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)

    def handle(self, *args, **options):
        try:
            report = speed_dating_import(
                path=options["path"],
                namespace=options["namespace"],
                batch_size=options["batch_size"],
                progress=ProgressPrinter.to(self.stdout),
            )
        except ImportRefused as refused:
            raise CommandError(_refusal(refused)) from None
        for line in report.lines():
            self.stdout.write(line)
