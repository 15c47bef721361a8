"""``manage.py import_interactions PATH --format edges``: bulk member-to-member
histories from a ``source,target,rating,time`` CSV."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from config.progress import ProgressPrinter
from interactions.edges import KindThresholds, edges_import
from interactions.importers import DEFAULT_BATCH_SIZE, ImportRefused

DEFAULTS = KindThresholds()


class Command(BaseCommand):
    help = (
        "Import member-to-member ratings from a CSV of source,target,rating,time "
        "(header optional; time = unix seconds or ISO 8601), e.g. the SNAP Bitcoin "
        "OTC file. Ratings map to kinds by thresholds (inclusive): rating >= "
        f"--super-like-min ({DEFAULTS.super_like_min:g}) super_like, >= --like-min "
        f"({DEFAULTS.like_min:g}) like, <= --block-max ({DEFAULTS.block_max:g}) "
        f"block, <= --dislike-max ({DEFAULTS.dislike_max:g}) dislike; ratings in "
        "between are neutral and skipped. External ids become members named "
        "<namespace>_<id> (placeholders with unknown profiles when new). Running it "
        "again changes nothing. Malformed rows refuse the file (line-numbered "
        "report) unless --skip-malformed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "path", help="A CSV file, or a folder whose *.csv files are imported."
        )
        parser.add_argument("--format", choices=["edges"], default="edges")
        parser.add_argument(
            "--namespace",
            default=None,
            help="Username prefix of the imported members (default: from the file "
            "name, e.g. 'otc' for soc-sign-bitcoinotc.csv, else 'ext').",
        )
        parser.add_argument("--super-like-min", type=float, default=None)
        parser.add_argument("--like-min", type=float, default=None)
        parser.add_argument("--dislike-max", type=float, default=None)
        parser.add_argument("--block-max", type=float, default=None)
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
        parser.add_argument("--skip-malformed", action="store_true")

    def handle(self, *args, **options):
        path = Path(options["path"])
        files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
        if not files:
            raise CommandError(f"No .csv file in {path}.")
        for file in files:
            if len(files) > 1:
                self.stdout.write(f"{file.name}:")
            self._import(file, options)

    def _import(self, path: Path, options: dict) -> None:
        namespace = options["namespace"] or _namespace_from(str(path))
        try:
            thresholds = KindThresholds(
                **{
                    name: options[name]
                    for name in (
                        "super_like_min",
                        "like_min",
                        "dislike_max",
                        "block_max",
                    )
                    if options[name] is not None
                }
            )
            report = edges_import(
                path=path,
                namespace=namespace,
                thresholds=thresholds,
                batch_size=options["batch_size"],
                skip_malformed=options["skip_malformed"],
                progress=ProgressPrinter.to(self.stdout),
            )
        except ImportRefused as refused:
            raise CommandError(_refusal(refused)) from None
        for line in report.lines():
            self.stdout.write(line)


def _namespace_from(path: str) -> str:
    name = path.rsplit("/", 1)[-1].lower()
    if "bitcoinotc" in name:
        return "otc"
    if "bitcoinalpha" in name:
        return "alpha"
    return "ext"


def _refusal(refused: ImportRefused) -> str:
    lines = [str(refused)]
    lines += [f"  line {line}: {message}" for line, message in refused.problems[:20]]
    if len(refused.problems) > 20:
        lines.append(f"  … and {len(refused.problems) - 20:,} more")
    return "\n".join(lines)
