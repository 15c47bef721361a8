import csv
import datetime as dt
import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Gender, Profile, User
from interactions.edges import KindThresholds, edges_import
from interactions.importers import import_counts
from interactions.models import Interaction, Match
from interactions.speed_dating import speed_dating_import, wave_start

pytestmark = pytest.mark.django_db

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
OTC = DATA / "bitcoin_otc" / "soc-sign-bitcoinotc.csv"
SPEED_DATING = DATA / "speed_dating" / "speed_dating.csv"


def _call(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _csv(tmp_path, text: str, name: str = "edges.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _snapshot(namespace: str):
    members = User.objects.filter(username__startswith=f"{namespace}_")
    return (
        sorted(members.values_list("username", "pk")),
        sorted(
            Interaction.objects.filter(actor__in=members.values("pk")).values_list(
                "actor_id", "target_id", "kind", "created_at", "updated_at"
            )
        ),
        sorted(
            Match.objects.filter(user_low__in=members.values("pk")).values_list(
                "user_low_id", "user_high_id", "matched_at", "ended_at", "end_reason"
            )
        ),
    )


EDGES = """source,target,rating,time
1,2,3,1289241912
2,1,10,1289241942
1,3,-2,1289243140
3,4,-10,1289243200
4,3,9,1289243300
5,1,0,1289243400
"""


def test_edges_become_placeholder_members_interactions_and_matches(tmp_path):
    output = _call(
        "import_interactions", str(_csv(tmp_path, EDGES)), "--namespace", "t"
    )

    assert "members: 4 created" in output  # t_5 only gave a neutral rating
    kinds = dict(
        Interaction.objects.values_list("actor__username", "kind").filter(
            target__username="t_1"
        )
    )
    assert kinds == {"t_2": "super_like"}  # t_5's 0 is neutral: skipped
    assert Interaction.objects.get(
        actor__username="t_1", target__username="t_2"
    ).kind == ("like")
    assert (
        Interaction.objects.get(actor__username="t_1", target__username="t_3").kind
        == "dislike"
    )
    assert (
        Interaction.objects.get(actor__username="t_3", target__username="t_4").kind
        == "block"
    )
    when = Interaction.objects.get(actor__username="t_2", target__username="t_1")
    assert when.created_at == dt.datetime.fromtimestamp(1289241942, tz=dt.UTC)
    assert "1 × neutral rating" in output

    # One match for the mutual positive pair 1-2; 3-4 is not mutual (a block).
    match = Match.objects.get()
    assert {match.user_low.username, match.user_high.username} == {"t_1", "t_2"}
    assert match.matched_at == when.created_at
    profile = Profile.objects.get(user__username="t_4")
    assert profile.gender == Gender.NONBINARY
    assert profile.user.preferences.seeking_genders == [
        Gender.FEMALE,
        Gender.MALE,
        Gender.NONBINARY,
    ]
    assert profile.created_at == dt.datetime.fromtimestamp(1289243200, tz=dt.UTC)
    assert profile.last_active_at == dt.datetime.fromtimestamp(1289243300, tz=dt.UTC)
    assert not User.objects.get(username="t_4").has_usable_password()
    assert not User.objects.filter(username="t_5").exists()


def test_a_second_edges_run_changes_nothing(tmp_path):
    path = _csv(tmp_path, EDGES)
    _call("import_interactions", str(path), "--namespace", "t")
    before = _snapshot("t")

    output = _call("import_interactions", str(path), "--namespace", "t")

    assert _snapshot("t") == before
    assert "nothing changed" in output
    assert "members: 0 created, 4 already present" in output


def test_a_newer_negative_rating_updates_the_row_and_ends_the_match(tmp_path):
    _call("import_interactions", str(_csv(tmp_path, EDGES)), "--namespace", "t")
    later = _csv(tmp_path, "2,1,-10,1300000000\n", name="later.csv")

    report = edges_import(path=later, namespace="t")

    assert report.interactions_updated == 1 and report.matches_ended == 1
    match = Match.objects.get()
    assert match.end_reason == "block"
    assert match.ended_at == dt.datetime.fromtimestamp(1300000000, tz=dt.UTC)
    row = Interaction.objects.get(actor__username="t_2", target__username="t_1")
    assert row.kind == "block"
    assert row.created_at == dt.datetime.fromtimestamp(1289241942, tz=dt.UTC)


def test_a_newer_like_back_reopens_the_ended_match_dated_anew(tmp_path):
    _call("import_interactions", str(_csv(tmp_path, EDGES)), "--namespace", "t")
    edges_import(
        path=_csv(tmp_path, "2,1,-10,1300000000\n", name="ended.csv"), namespace="t"
    )
    again = _csv(tmp_path, "2,1,5,1400000000\n", name="again.csv")

    report = edges_import(path=again, namespace="t")

    assert report.matches_reopened == 1
    assert report.matches_created == report.matches_ended == 0
    match = Match.objects.get()
    assert match.is_active and match.end_reason == ""
    assert match.matched_at == dt.datetime.fromtimestamp(1400000000, tz=dt.UTC)


def test_malformed_rows_are_refused_with_their_line_numbers(tmp_path):
    path = _csv(
        tmp_path,
        "1,2,3,1289241912\n1,3,lots,1289241913\n2\n4,5,1,yesterday\n",
    )

    with pytest.raises(CommandError) as error:
        _call("import_interactions", str(path), "--namespace", "t")

    message = str(error.value)
    assert "3 malformed row(s); nothing was imported" in message
    assert "line 2: rating 'lots' is not a number" in message
    assert "line 3: expected 4 fields" in message
    assert "line 4: time 'yesterday'" in message
    assert not User.objects.filter(username__startswith="t_").exists()


def test_skip_malformed_imports_the_rest_and_reports_the_lines(tmp_path):
    path = _csv(tmp_path, "1,2,3,1289241912\n1,3,lots,1289241913\n")

    output = _call(
        "import_interactions", str(path), "--namespace", "t", "--skip-malformed"
    )

    assert Interaction.objects.count() == 1
    assert "line 2: malformed: rating 'lots' is not a number" in output


def test_thresholds_are_overridable(tmp_path):
    path = _csv(tmp_path, EDGES)

    _call(
        "import_interactions",
        str(path),
        "--namespace",
        "t",
        "--like-min",
        "4",
        "--super-like-min",
        "9",
        "--dislike-max",
        "-3",
        "--block-max",
        "-5",
    )

    kinds = dict(
        (f"{a}>{t}", k)
        for a, t, k in Interaction.objects.values_list(
            "actor__username", "target__username", "kind"
        )
    )
    # 3 and -2 are neutral now; 10 and 9 super-likes; -10 a block.
    assert kinds == {
        "t_2>t_1": "super_like",
        "t_3>t_4": "block",
        "t_4>t_3": "super_like",
    }


def test_inconsistent_thresholds_are_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="Thresholds must satisfy"):
        _call("import_interactions", str(_csv(tmp_path, EDGES)), "--like-min", "-5")
    assert KindThresholds().kind_of(0.5) is None


def test_an_unreadable_path_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        _call("import_interactions", str(tmp_path / "missing.csv"))


@pytest.mark.skipif(not OTC.exists(), reason="shared data sets not present")
def test_a_slice_of_bitcoin_otc_loads_from_its_folder_as_otc_members(tmp_path):
    lines = OTC.read_text().splitlines()[:400]
    path = tmp_path / "soc-sign-bitcoinotc.csv"
    path.write_text("\n".join(lines) + "\n")

    # The folder, as the data set ships: every *.csv in it.
    output = _call("import_interactions", str(tmp_path), "--format", "edges")

    counts = import_counts(namespace="otc")
    ids = {field for line in lines for field in line.split(",")[:2]}
    assert counts["members"] == len(ids)
    assert counts["interactions"] == len(lines)
    assert "interactions: 400 created" in output
    assert "nothing changed" in _call("import_interactions", str(path))


def _speed_dating_rows(waves: set[str]) -> tuple[list[str], list[dict]]:
    with open(SPEED_DATING, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if row["wave"] in waves]
        return reader.fieldnames, rows


def _write_rows(path: Path, fields: list[str], rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.skipif(not SPEED_DATING.exists(), reason="shared data sets not present")
def test_speed_dating_waves_import_with_round_order_matches_and_a_second_run(
    tmp_path,
):
    fields, rows = _speed_dating_rows({"1", "5"})
    path = _write_rows(tmp_path / "sd.csv", fields, rows)

    report = speed_dating_import(path=path)

    iids = {row["iid"] for row in rows}
    assert report.members_created == len(iids)
    usable = [row for row in rows if row["pid"]]
    assert report.interactions_created == len(usable)
    assert report.skipped["partner id (pid) missing"] == len(rows) - len(usable)
    likes = Interaction.objects.filter(kind="like").count()
    assert likes == sum(row["dec"] == "1" for row in usable)
    assert Match.objects.count() == sum(row["match"] == "1" for row in usable) // 2

    member = rows[0]
    profile = Profile.objects.get(user__username=f"sd_{member['iid']}")
    assert profile.gender == (Gender.FEMALE if member["gender"] == "0" else Gender.MALE)
    assert profile.city == "New York (wave 1)"
    assert profile.user.preferences.seeking_genders == [
        Gender.MALE if member["gender"] == "0" else Gender.FEMALE
    ]
    assert f"Studies {member['field']}" in profile.bio
    # Each participant's dates follow the evening's order, four minutes apart.
    own = sorted(
        (int(row["order"]), row["pid"]) for row in usable if row["iid"] == member["iid"]
    )
    times = [
        Interaction.objects.get(
            actor__username=f"sd_{member['iid']}", target__username=f"sd_{pid}"
        ).created_at
        for _, pid in own
    ]
    assert times == sorted(times)
    assert times[0] == wave_start(1) + dt.timedelta(minutes=4 * (own[0][0] - 1))
    # Joined just before their evening, last active at their last date.
    assert profile.created_at == wave_start(1) - dt.timedelta(hours=1)
    assert profile.last_active_at == times[-1]

    before = _snapshot("sd")
    again = speed_dating_import(path=path)
    assert not again.changed and _snapshot("sd") == before


@pytest.mark.skipif(not SPEED_DATING.exists(), reason="shared data sets not present")
def test_speed_dating_missing_values_are_filled_or_skipped_and_reported(tmp_path):
    fields, rows = _speed_dating_rows({"1"})
    first = rows[0]["iid"]
    for row in rows:
        if row["iid"] == first:
            row["age"] = ""
            row["field"] = ""
            for activity in ("sports", "yoga", "music", "reading"):
                row[activity] = ""
    rows[1]["dec"] = ""
    rows[2]["pid"] = ""
    path = _write_rows(tmp_path / "sd.csv", fields, rows)

    output = _call("import_speed_dating", str(path))

    assert "1 × decision (dec) missing" in output
    assert "1 × partner id (pid) missing" in output
    assert "1 participant(s) without an age: birth date from the median age" in output
    profile = Profile.objects.get(user__username=f"sd_{first}")
    assert profile.bio == "Speed Dating Experiment, wave 1."
    assert Interaction.objects.count() == len(rows) - 2


def test_a_file_that_is_not_speed_dating_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="missing columns"):
        _call("import_speed_dating", str(_csv(tmp_path, EDGES)))


def test_a_pair_rated_twice_in_one_file_keeps_its_latest_rating(tmp_path):
    path = _csv(tmp_path, "1,2,5,1300000000\n1,2,-9,1200000000\n")

    report = edges_import(path=path, namespace="t")

    row = Interaction.objects.get()
    assert row.kind == "like"
    assert row.created_at == dt.datetime.fromtimestamp(1300000000, tz=dt.UTC)
    assert report.examples == [(2, "superseded by a later rating")]


def test_across_batches_the_newer_rating_of_a_pair_wins_and_reruns_are_stable(
    tmp_path,
):
    path = _csv(tmp_path, "1,2,-9,1200000000\n1,2,5,1300000000\n2,1,4,1250000000\n")

    first = edges_import(path=path, namespace="t", batch_size=1)
    second = edges_import(path=path, namespace="t", batch_size=1)

    row = Interaction.objects.get(actor__username="t_1")
    assert (row.kind, row.updated_at) == (
        "like",
        dt.datetime.fromtimestamp(1300000000, tz=dt.UTC),
    )
    assert first.interactions_updated == 1 and first.matches_created == 1
    assert not second.changed
