"""The A/B report on a hand-built data set whose counts are worked out below.

ranking-v5-vs-v4, control (all time: 9 impressions, 4 likes, 2 matches):
  c  shown t1 t2 t3 t4 t5 at T0, and t1 again at T0+2h       6 impressions
     likes t1 at T0+1h (t1 liked c before; matched)           like, match
     super-likes t2 at T0+1h (no match)                       like
     dislikes t3; nothing on t4
     liked t5 at T0-1h, BEFORE being shown t5 (matched then)  not credited
     the second t1 impression comes after the like            not credited
  c2 shown t1 and t2 at T0; likes t1 at T0+3h (matched)       2 impr., like, match
  c3 shown t2 40 days ago and liked t2 then                   1 impr., like
ranking-v5-vs-v4, challenger (3 impressions, 2 likes, 1 match):
  h  shown u1 u3 at T0 and u1 again at T0+1h;
     likes u1 at T0+2h: credited once (to the latest impression before it);
     u1 liked h before: matched at T0+2h (match ended since: still made)
     likes u3 at T0+1h (no match)
embedding-v3-vs-v2, control: e shown t1 at T0, nothing        1 impression
Outside any experiment: n shown t1 and likes t1               not reported
"""

import datetime as dt
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from interactions.models import Interaction
from recommender.models import RecommendationLog
from recommender.selectors import ArmReport, ab_report, ab_report_since
from tests.accounts.factories import UserFactory, member
from tests.interactions.factories import MatchFactory

pytestmark = pytest.mark.django_db

RANKING = "ranking-v5-vs-v4"
REPORT_URL = reverse("admin:registry_mlmodel_ab_report")
T0 = timezone.now() - dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


def shown(viewer, target, at, experiment, position=1):
    RecommendationLog.objects.create(
        request_id=f"r-{viewer.pk}-{target.pk}-{at.timestamp()}",
        user=viewer,
        shown_user=target,
        position=position,
        score=0.5,
        sources=["content"],
        strategy="full",
        model_versions={"ranking": 5},
        experiment=experiment,
        created_at=at,
    )


def verdict(actor, target, kind, at):
    interaction = Interaction.objects.create(actor=actor, target=target, kind=kind)
    Interaction.objects.filter(pk=interaction.pk).update(created_at=at, updated_at=at)


def matched(a, b, at, ended_at=None):
    low, high = sorted((a, b), key=lambda user: user.pk)
    MatchFactory(user_low=low, user_high=high, matched_at=at, ended_at=ended_at)


@pytest.fixture
def experiment_data():
    c, c2, c3, h, e, n = (member() for _ in range(6))
    t1, t2, t3, t4, t5, u1, u3 = (member() for _ in range(7))
    control, challenger = f"{RANKING}:control", f"{RANKING}:challenger"

    for position, target in enumerate((t1, t2, t3, t4, t5), start=1):
        shown(c, target, T0, control, position)
    shown(c, t1, T0 + 2 * HOUR, control)
    verdict(t1, c, "like", T0 - dt.timedelta(days=2))
    verdict(c, t1, "like", T0 + HOUR)
    matched(c, t1, T0 + HOUR)
    verdict(c, t2, "super_like", T0 + HOUR)
    verdict(c, t3, "dislike", T0 + HOUR)
    verdict(t5, c, "like", T0 - dt.timedelta(days=2))
    verdict(c, t5, "like", T0 - HOUR)
    matched(c, t5, T0 - HOUR)

    shown(c2, t1, T0, control)
    shown(c2, t2, T0, control, 2)
    verdict(t1, c2, "like", T0 - dt.timedelta(days=2))
    verdict(c2, t1, "like", T0 + 3 * HOUR)
    matched(c2, t1, T0 + 3 * HOUR)

    forty_days_ago = timezone.now() - dt.timedelta(days=40)
    shown(c3, t2, forty_days_ago, control)
    verdict(c3, t2, "like", forty_days_ago + HOUR)

    shown(h, u1, T0, challenger)
    shown(h, u3, T0, challenger, 2)
    shown(h, u1, T0 + HOUR, challenger)
    verdict(u1, h, "like", T0 - dt.timedelta(days=1))
    verdict(h, u1, "like", T0 + 2 * HOUR)
    matched(h, u1, T0 + 2 * HOUR, ended_at=T0 + 5 * HOUR)
    verdict(h, u3, "like", T0 + HOUR)

    shown(e, t1, T0, "embedding-v3-vs-v2:control")

    shown(n, t1, T0, "")
    verdict(n, t1, "like", T0 + HOUR)


def test_counts_per_arm_on_a_hand_built_data_set(experiment_data):
    assert ab_report() == [
        ArmReport("embedding-v3-vs-v2", "control", impressions=1, likes=0, matches=0),
        ArmReport(RANKING, "control", impressions=9, likes=4, matches=2),
        ArmReport(RANKING, "challenger", impressions=3, likes=2, matches=1),
    ]


def test_rates_are_per_impression(experiment_data):
    control, challenger = ab_report(kind="ranking")

    assert control.like_rate == pytest.approx(4 / 9)
    assert control.match_rate == pytest.approx(2 / 9)
    assert challenger.like_rate == pytest.approx(2 / 3)
    assert challenger.match_rate == pytest.approx(1 / 3)


def test_rates_of_an_arm_without_impressions_are_none():
    empty = ArmReport("x", "control", impressions=0, likes=0, matches=0)

    assert empty.like_rate is None
    assert empty.match_rate is None
    assert empty.like_interval is None
    assert empty.match_interval is None


def test_rates_have_95_percent_wilson_intervals(experiment_data):
    control, challenger = ab_report(kind="ranking")

    # (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.96
    assert control.like_interval.text == "0.1888-0.7333"  # 4 of 9
    assert control.match_interval.text == "0.0632-0.5474"  # 2 of 9
    assert challenger.like_interval.text == "0.2077-0.9385"  # 2 of 3
    assert challenger.match_interval.text == "0.0615-0.7923"  # 1 of 3
    assert control.like_interval.low == pytest.approx(0.188778521, abs=1e-9)


def test_the_challenger_arm_is_tested_against_control(experiment_data):
    control, challenger = ab_report(kind="ranking", since=ab_report_since(days=30))

    assert control.like_test is None and control.match_test is None
    # 3 impressions: expected counts under 5, so Fisher's exact test. Likes 2 of 3
    # against 3 of 8: of the tables with these margins (3 + 8 impressions, 5
    # likes), P(challenger likes = 0, 1, 2, 3) = 20, 75, 60, 10 / 165; those no
    # likelier than the observed 2 sum to (20 + 60 + 10) / 165 = 0.5455.
    assert challenger.like_test.method == "fisher"
    assert challenger.like_test.p_value == pytest.approx(90 / 165)
    assert challenger.like_test.difference == pytest.approx(2 / 3 - 3 / 8)
    assert challenger.match_test.method == "fisher"
    assert challenger.match_test.p_value == pytest.approx(1.0)


def test_an_experiment_without_a_control_arm_has_no_test(db):
    viewer, target = member(), member()
    shown(viewer, target, T0, f"{RANKING}:challenger")

    (only,) = ab_report()

    assert only.arm == "challenger"
    assert only.like_test is None


def test_experiment_keeps_that_experiments_arms(experiment_data):
    rows = ab_report(experiment=RANKING)

    assert [(r.experiment, r.arm) for r in rows] == [
        (RANKING, "control"),
        (RANKING, "challenger"),
    ]
    assert ab_report(experiment="ranking-v9-vs-v5") == []


def test_kind_keeps_the_experiments_about_that_kind(experiment_data):
    assert [(r.experiment, r.arm) for r in ab_report(kind="ranking")] == [
        (RANKING, "control"),
        (RANKING, "challenger"),
    ]
    assert [r.experiment for r in ab_report(kind="embedding")] == ["embedding-v3-vs-v2"]


def test_since_keeps_recent_impressions(experiment_data):
    rows = ab_report(kind="ranking", since=ab_report_since(days=30))

    assert rows[0] == ArmReport(RANKING, "control", impressions=8, likes=3, matches=2)
    assert rows[1].impressions == 3


def test_no_experiment_no_rows(db):
    viewer, target = member(), member()
    shown(viewer, target, T0, "")

    assert ab_report() == []


# --- the command ------------------------------------------------------------------

# arm, impressions, likes, like rate, its 95 % interval, p-value against control,
# matches, match rate, interval, p-value, tests (like/match): as printed and shown.
EMBEDDING_CONTROL = [
    "control", "1", "0", "0.0000", "0.0000-0.7935", "—",
    "0", "0.0000", "0.0000-0.7935", "—", "—",
]  # fmt: skip
RANKING_CONTROL = [
    "control", "9", "4", "0.4444", "0.1888-0.7333", "—",
    "2", "0.2222", "0.0632-0.5474", "—", "—",
]  # fmt: skip
RANKING_CHALLENGER = [
    "challenger", "3", "2", "0.6667", "0.2077-0.9385", "1.0000",
    "1", "0.3333", "0.0615-0.7923", "1.0000", "fisher/fisher",
]  # fmt: skip
RANKING_CONTROL_30_DAYS = [
    "control", "8", "3", "0.3750", "0.1368-0.6943", "—",
    "2", "0.2500", "0.0715-0.5907", "—", "—",
]  # fmt: skip
RANKING_CHALLENGER_30_DAYS = [
    "challenger", "3", "2", "0.6667", "0.2077-0.9385", "0.5455",
    "1", "0.3333", "0.0615-0.7923", "1.0000", "fisher/fisher",
]  # fmt: skip


def report_lines(*args) -> list[list[str]]:
    out = StringIO()
    call_command("ab_report", *args, stdout=out)
    return [line.split() for line in out.getvalue().splitlines()]


def test_command_prints_counts_and_rates(experiment_data):
    lines = report_lines()

    assert lines[0] == [
        "experiment",
        "arm",
        "impressions",
        "likes",
        "like_rate",
        "like_95ci",
        "like_p",
        "matches",
        "match_rate",
        "match_95ci",
        "match_p",
        "test",
    ]
    assert lines[1:] == [
        ["embedding-v3-vs-v2", *EMBEDDING_CONTROL],
        [RANKING, *RANKING_CONTROL],
        [RANKING, *RANKING_CHALLENGER],
    ]


def test_command_filters_by_kind_and_days(experiment_data):
    lines = report_lines("--kind", "ranking", "--since", "30")

    assert lines[1:] == [
        [RANKING, *RANKING_CONTROL_30_DAYS],
        [RANKING, *RANKING_CHALLENGER_30_DAYS],
    ]


def test_command_says_when_there_is_nothing_to_report(db):
    assert report_lines() == [
        ["No", "impressions", "served", "inside", "an", "experiment."]
    ]


@pytest.mark.parametrize("days", ["0", "-3", "soon"])
def test_command_rejects_a_bad_number_of_days(db, days):
    with pytest.raises(CommandError, match="--since"):
        call_command("ab_report", "--since", days)


def test_command_rejects_an_unknown_kind(db):
    with pytest.raises(CommandError):
        call_command("ab_report", "--kind", "colour")


# --- the admin page -----------------------------------------------------------------


def staff_client(client, *codenames):
    user = UserFactory(is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="registry", codename__in=codenames
        )
    )
    client.force_login(user)
    return client


def table_rows(response) -> list[list[str]]:
    import re

    html = response.content.decode()
    body = html.split('<table id="ab-report">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)[1:]
    return [
        [cell.strip() for cell in re.findall(r"<td>(.*?)</td>", row, flags=re.S)]
        for row in rows
    ]


def test_admin_page_shows_the_report_to_staff_with_the_registry_permission(
    client, experiment_data
):
    response = staff_client(client, "view_mlmodel").get(REPORT_URL)

    assert response.status_code == 200
    assert table_rows(response) == [
        ["embedding-v3-vs-v2", *EMBEDDING_CONTROL],
        [RANKING, *RANKING_CONTROL],
        [RANKING, *RANKING_CHALLENGER],
    ]


def test_admin_page_filters(client, experiment_data):
    response = staff_client(client, "view_mlmodel").get(
        REPORT_URL, {"kind": "ranking", "since": 30}
    )

    assert table_rows(response) == [
        [RANKING, *RANKING_CONTROL_30_DAYS],
        [RANKING, *RANKING_CHALLENGER_30_DAYS],
    ]


def test_admin_page_with_bad_filters_shows_the_error_not_a_500(client, experiment_data):
    response = staff_client(client, "view_mlmodel").get(REPORT_URL, {"since": "x"})

    assert response.status_code == 200
    assert "Enter a whole number" in response.content.decode()
    assert len(table_rows(response)) == 3


def test_admin_page_is_refused_to_staff_without_the_registry_permission(
    client, experiment_data
):
    response = staff_client(client, "view_modelactivation").get(REPORT_URL)

    assert response.status_code == 403


def test_admin_page_sends_non_staff_to_the_login(client, experiment_data):
    client.force_login(member())

    response = client.get(REPORT_URL)

    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_the_registry_changelist_links_to_the_report(client):
    response = staff_client(client, "view_mlmodel").get(
        reverse("admin:registry_mlmodel_changelist")
    )

    assert REPORT_URL in response.content.decode()
