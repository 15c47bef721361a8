"""``manage.py benchmark``: measure, print and record figures in BENCHMARKS.md/.json.

manage.py benchmark --search --users 100000,1000000
manage.py benchmark --endpoint --users 100000        (needs PG + Redis, seeded)
manage.py benchmark --hits --users 100000            (in-process cache hits, ditto)
manage.py benchmark --training --users 10000,100000  (needs PG)
"""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.cli import positive_int, positive_int_list
from recommender.benchmarks.common import (
    load_average,
    machine_describe,
    now_iso,
    results_save,
)


class Command(BaseCommand):
    help = (
        "Benchmarks: candidate search (--search), the recommendation endpoint under "
        "load (--endpoint) or its cache hits in-process (--hits) and the training "
        "pipeline (--training), at one or more --users scales. Writes BENCHMARKS.md "
        "and BENCHMARKS.json in --out."
    )

    def add_arguments(self, parser):
        parser.add_argument("--search", action="store_true")
        parser.add_argument("--endpoint", action="store_true")
        parser.add_argument("--training", action="store_true")
        parser.add_argument(
            "--hits",
            action="store_true",
            help="Cache hits through the WSGI application in this process, one "
            "thread: wall and CPU time per request (needs PG + Redis, seeded).",
        )
        parser.add_argument(
            "--users",
            type=positive_int_list,
            default=[100_000],
            help="e.g. 100000,1000000",
        )
        parser.add_argument("--repeat", type=positive_int, default=3)
        parser.add_argument(
            "--out",
            default=str(settings.BASE_DIR),
            help="Directory of BENCHMARKS.md / BENCHMARKS.json (default: the repo).",
        )
        parser.add_argument("--seed", type=int, default=42)
        search = parser.add_argument_group("search")
        search.add_argument("--dim", type=positive_int, default=64)
        search.add_argument("--queries", type=positive_int, default=500)
        search.add_argument("--no-pgvector", action="store_true")
        search.add_argument(
            "--random-vectors",
            action="store_true",
            help="Random unit vectors instead of the embedding stage's (faster).",
        )
        search.add_argument(
            "--cache-dir",
            default="/tmp/kindred-bench",
            help="Where generated vectors are cached between runs ('' = never).",
        )
        endpoint = parser.add_argument_group("endpoint")
        endpoint.add_argument("--duration", type=positive_int, default=20)
        endpoint.add_argument("--connections", type=positive_int_list, default=[1, 4])
        endpoint.add_argument("--tokens", type=positive_int, default=20_000)
        endpoint.add_argument("--limit", type=positive_int, default=20)
        endpoint.add_argument("--port", type=positive_int, default=8766)
        endpoint.add_argument("--no-naive", action="store_true")
        endpoint.add_argument(
            "--profile",
            action="store_true",
            help="py-spy one worker during the busiest miss phase (needs py-spy).",
        )
        endpoint.add_argument(
            "--label", default="", help="Suffix of the section name (before/after)."
        )
        hits = parser.add_argument_group("hits")
        hits.add_argument("--members", type=positive_int, default=40)
        hits.add_argument("--rounds", type=positive_int, default=20)
        hits.add_argument(
            "--cprofile", action="store_true", help="cProfile the measured requests."
        )
        training = parser.add_argument_group("training")
        training.add_argument(
            "--database-template",
            default="",
            help="PostgreSQL URL with {users}, e.g. "
            "postgres://postgres@127.0.0.1:5432/kindred_bench_{users}: created, "
            "migrated and seeded when empty. Default: the current database, which "
            "must hold that many demo members.",
        )

    def handle(self, *args, **options):
        kinds = ("search", "endpoint", "hits", "training")
        if not any(options[kind] for kind in kinds):
            raise CommandError(
                "choose at least one of --search, --endpoint, --hits, --training"
            )
        out = Path(options["out"])
        for users in options["users"]:
            if options["training"]:
                self._run("training", users, options, out)
            if options["search"]:
                self._run("search", users, options, out)
            if options["endpoint"]:
                self._run("endpoint", users, options, out)
            if options["hits"]:
                self._run("hits", users, options, out)

    def _progress(self, message: str) -> None:
        self.stdout.write(f"[{time.strftime('%H:%M:%S')}] {message}")
        self.stdout.flush()

    def _run(self, kind: str, users: int, options: dict, out: Path) -> None:
        machine = machine_describe()
        started, began = now_iso(), time.perf_counter()
        self._progress(f"{kind} at {users:,} users; load {machine['load_average']}")
        if kind == "search":
            section = self._search(users, options)
        elif kind == "endpoint":
            section = self._endpoint(users, options)
        elif kind == "hits":
            section = self._hits(options)
        else:
            section = self._training(users, options)
        section.update(
            machine=machine,
            started=started,
            seconds=round(time.perf_counter() - began, 1),
            load_average_end=load_average(),
        )
        name = f"{kind}-{users}" + (f"-{options['label']}" if options["label"] else "")
        json_path, md_path = results_save(out_dir=out, sections={name: section})
        self._progress(f"{name} recorded in {md_path} and {json_path}")

    def _search(self, users: int, options: dict) -> dict:
        from recommender.benchmarks.search import SearchParams, search_benchmark

        params = SearchParams(
            users=users,
            dim=options["dim"],
            seed=options["seed"],
            queries=min(options["queries"], users),
            repeat=options["repeat"],
            pgvector=not options["no_pgvector"],
            cache_dir=options["cache_dir"],
            vectors="random" if options["random_vectors"] else "embedding",
        )
        if users < 1_000:
            raise CommandError("--search needs --users >= 1000")
        return search_benchmark(params, progress=self._progress)

    def _endpoint(self, users: int, options: dict) -> dict:
        from recommender.benchmarks.endpoint import EndpointParams, endpoint_benchmark

        params = EndpointParams(
            users=users,
            duration=options["duration"],
            connections=tuple(options["connections"]),
            tokens=options["tokens"],
            limit=options["limit"],
            port=options["port"],
            naive=not options["no_naive"],
            profile=options["profile"],
            seed=options["seed"],
        )
        try:
            return endpoint_benchmark(params, progress=self._progress)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc

    def _hits(self, options: dict) -> dict:
        from recommender.benchmarks.inprocess import HitParams, hit_benchmark

        params = HitParams(
            members=options["members"],
            rounds=options["rounds"],
            limit=options["limit"],
            seed=options["seed"],
            profile=options["cprofile"],
        )
        return hit_benchmark(params, progress=self._progress)

    def _training(self, users: int, options: dict) -> dict:
        from recommender.benchmarks.training import TrainingParams, training_benchmark

        params = TrainingParams(
            users=users,
            repeat=options["repeat"],
            seed=options["seed"],
            database_template=options["database_template"],
        )
        try:
            return training_benchmark(params, progress=self._progress)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
