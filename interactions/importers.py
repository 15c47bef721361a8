"""Bulk importers of real member-to-member histories.

Two readers feed one writer:

* ``interactions.edges.edges_import`` — a CSV of ``source,target,rating,time`` rows
  (header optional; the SNAP signed-network shape, e.g. Bitcoin OTC). Ratings become
  kinds through ``KindThresholds``; unknown ids become placeholder members.
* ``interactions.speed_dating.speed_dating_import`` — the Speed Dating Experiment
  (Fisman et al. 2006): participants become members, each speed date's ``dec`` a
  like (1) or dislike (0).

External ids map to members through their username: ``<namespace>_<external id>``
(``otc_42``, ``sd_131``), stable across runs and files, so a second run finds the
members and rows of the first and changes nothing.

The writer (:class:`ImportWriter`, over ``interactions.bulk``) streams rows in
batches, each batch in its own transaction (an interrupted import is completed by
running it again):

* members it does not know are created with their user, profile and preferences;
  existing members are never modified;
* interactions keep the model's invariants: one row per (actor, target) (a pair
  rated twice keeps its latest rating by time), never a self pair; ``created_at``
  / ``updated_at`` are the rating's time, not the import's;
* matches follow the rule of ``interactions.matching`` (the one of
  ``interaction_record``), applied to the final state: one ``Match`` per unordered
  pair that liked (or super-liked) each other, ``matched_at`` = the later of the two
  likes; a pair whose mutual like is gone ends its match (``block`` if either side
  blocked, else ``unlike``); an ended match whose pair is mutual again is reopened.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.db.models import Q

from accounts.models import User
from interactions.bulk import (
    NewMember,
    interactions_insert,
    matches_sync,
    members_insert,
    utc_datetime64,
)
from interactions.models import Interaction, Match

DEFAULT_BATCH_SIZE = 2_000
MAX_REPORTED_PROBLEMS = 20
MAX_PRINTED_EXAMPLES = 5
NAMESPACE_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,19}$")
IMPORT_CONTEXT_SOURCE = "import"

Progress = Callable[[str, int, int], None]


class ImportRefused(Exception):
    """The file cannot be imported as it is; ``problems`` lists (line, message)."""

    def __init__(self, message: str, problems: list[tuple[int, str]] | None = None):
        super().__init__(message)
        self.problems = problems or []


# --- what an import did ---------------------------------------------------------------


@dataclass
class ImportReport:
    """Counts of one import run; ``skipped`` counts rows left out by reason and
    ``examples`` keeps the first few (line, reason) of them."""

    namespace: str
    rows_read: int = 0
    members_created: int = 0
    members_existing: int = 0
    interactions_created: int = 0
    interactions_updated: int = 0
    interactions_unchanged: int = 0
    matches_created: int = 0
    matches_reopened: int = 0
    matches_ended: int = 0
    kinds: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    examples: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def skip(self, line: int, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < MAX_REPORTED_PROBLEMS:
            self.examples.append((line, reason))

    @property
    def changed(self) -> bool:
        return bool(
            self.members_created
            or self.interactions_created
            or self.interactions_updated
            or self.matches_created
            or self.matches_reopened
            or self.matches_ended
        )

    def lines(self) -> list[str]:
        """The report as human-readable lines (what the commands print)."""
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(self.kinds.items()))
        out = [
            f"namespace {self.namespace!r}: {self.rows_read:,} rows read in "
            f"{self.seconds:,.1f}s",
            f"members: {self.members_created:,} created, "
            f"{self.members_existing:,} already present",
            f"interactions: {self.interactions_created:,} created, "
            f"{self.interactions_updated:,} updated, "
            f"{self.interactions_unchanged:,} unchanged ({kinds or 'none'})",
            f"matches: {self.matches_created:,} created, "
            f"{self.matches_reopened:,} reopened, {self.matches_ended:,} ended",
        ]
        if self.skipped:
            out.append(f"skipped {sum(self.skipped.values()):,} rows:")
            out += [f"  {n:,} × {reason}" for reason, n in self.skipped.most_common()]
            out += [
                f"  e.g. line {line}: {reason}"
                for line, reason in self.examples[:MAX_PRINTED_EXAMPLES]
            ]
        out += self.notes
        if not self.changed:
            out.append("nothing changed (already imported)")
        return out


@dataclass(frozen=True)
class Edge:
    """One verdict to import: ``line`` of the source file, external ids, kind, time
    (aware datetime)."""

    line: int
    source: str
    target: str
    kind: str
    at: dt.datetime


def username_for(*, namespace: str, external_id: str) -> str:
    """The stable username of an imported member: ``<namespace>_<external id>``."""
    return f"{namespace}_{external_id}"


def check_namespace(namespace: str) -> None:
    if not NAMESPACE_PATTERN.match(namespace):
        raise ImportRefused(
            f"Namespace {namespace!r} must be 1-20 lower-case letters or digits, "
            "starting with a letter."
        )


# --- the writer -----------------------------------------------------------------------


class ImportWriter:
    """Writes one import through ``interactions.bulk``: members, then the edges in
    batches (a transaction each), then the namespace's matches."""

    def __init__(
        self,
        namespace: str,
        report: ImportReport,
        batch_size: int,
        progress: Progress | None,
    ):
        if batch_size < 1:
            raise ImportRefused("batch size must be at least 1")
        self.namespace = namespace
        self.report = report
        self.batch_size = batch_size
        self.progress = progress or (lambda stage, done, total: None)
        self.user_ids: dict[str, int] = {}
        self.password = make_password(None)  # unusable: imported members cannot log in

    def write(
        self, members: dict[str, NewMember], edges: Iterable[Edge], total: int
    ) -> None:
        """Create the unknown ``members`` (``{external id: member}``, usernames from
        :func:`username_for`), then stream ``edges`` (``total`` of them) in
        batches, then bring the namespace's matches in line."""
        by_external_id = sorted(members.items())
        done = 0
        for start in range(0, len(by_external_id), self.batch_size):
            batch = by_external_id[start : start + self.batch_size]
            with transaction.atomic():
                self._members(batch)
            done += len(batch)
            self.progress("members", done, len(by_external_id))

        done = 0
        iterator = iter(edges)
        while chunk := list(islice(iterator, self.batch_size)):
            # A pair rated more than once keeps its latest rating: inside a batch
            # here, across batches by the newer-than-stored rule of _interactions.
            latest: dict[tuple[str, str], Edge] = {}
            for edge in chunk:
                key = (edge.source, edge.target)
                if key in latest:
                    older = edge if edge.at < latest[key].at else latest[key]
                    self.report.skip(older.line, "superseded by a later rating")
                    if older is edge:
                        continue
                latest[key] = edge
            with transaction.atomic():
                self._interactions(list(latest.values()))
            done += len(chunk)
            self.progress("interactions", done, total)
        with transaction.atomic():
            self._matches()
        self.progress("matches", 1, 1)

    def _members(self, batch: list[tuple[str, NewMember]]) -> None:
        external_ids = {member.username: external_id for external_id, member in batch}
        existing = dict(
            User.objects.filter(username__in=list(external_ids)).values_list(
                "username", "pk"
            )
        )
        self.report.members_existing += len(existing)
        for username, pk in existing.items():
            self.user_ids[external_ids[username]] = pk
        new = [member for _, member in batch if member.username not in existing]
        if not new:
            return
        ids = members_insert(members=new, password=self.password, batch_size=len(new))
        for member, pk in zip(new, ids, strict=True):
            self.user_ids[external_ids[member.username]] = pk
        self.report.members_created += len(new)

    def _interactions(self, batch: list[Edge]) -> None:
        pairs = {(self.user_ids[e.source], self.user_ids[e.target]): e for e in batch}
        actors = {a for a, _ in pairs}
        targets = {t for _, t in pairs}
        existing = {
            (a, t): (pk, kind, updated)
            for pk, a, t, kind, updated in Interaction.objects.filter(
                actor_id__in=actors, target_id__in=targets
            ).values_list("pk", "actor_id", "target_id", "kind", "updated_at")
            if (a, t) in pairs
        }
        inserts, updates = [], []
        for (actor, target), edge in pairs.items():
            self.report.kinds[edge.kind] += 1
            found = existing.get((actor, target))
            if found is None:
                inserts.append((actor, target, edge))
            elif found[1] != edge.kind and edge.at >= found[2]:
                updates.append(
                    Interaction(pk=found[0], kind=edge.kind, updated_at=edge.at)
                )
            else:
                self.report.interactions_unchanged += 1
        if inserts:
            # Created and updated at the rating's time, not the import's.
            interactions_insert(
                actor_ids=np.array([a for a, _, _ in inserts], dtype=np.int64),
                target_ids=np.array([t for _, t, _ in inserts], dtype=np.int64),
                kinds=np.array([str(edge.kind) for _, _, edge in inserts]),
                created_at=utc_datetime64(edge.at for _, _, edge in inserts),
                context={"source": IMPORT_CONTEXT_SOURCE, "dataset": self.namespace},
            )
        if updates:
            Interaction.objects.bulk_update(updates, ["kind", "updated_at"])
        self.report.interactions_created += len(inserts)
        self.report.interactions_updated += len(updates)

    def _matches(self) -> None:
        """Bring the namespace's matches in line with its interactions (module
        docstring)."""
        members = User.objects.filter(username__startswith=f"{self.namespace}_")
        changes = matches_sync(
            verdicts=Interaction.objects.filter(actor__in=members.values("pk"))
            .order_by()
            .values_list("actor_id", "target_id", "kind", "updated_at"),
            matches=Match.objects.filter(
                Q(user_low__in=members.values("pk"))
                | Q(user_high__in=members.values("pk"))
            ),
            batch_size=self.batch_size,
        )
        self.report.matches_created += changes.created
        self.report.matches_reopened += changes.reopened
        self.report.matches_ended += changes.ended


def import_counts(*, namespace: str) -> dict[str, int]:
    """Members, interactions and active matches of an imported namespace."""
    members = User.objects.filter(username__startswith=f"{namespace}_")
    return {
        "members": members.count(),
        "interactions": Interaction.objects.filter(
            actor__in=members.values("pk")
        ).count(),
        "matches": Match.objects.filter(
            user_low__in=members.values("pk"), ended_at__isnull=True
        ).count(),
    }


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Edge",
    "ImportWriter",
    "ImportRefused",
    "ImportReport",
    "check_namespace",
    "import_counts",
    "username_for",
]
