"""The A/B statistics against closed-form values and scipy's own tests."""

import math

import pytest
from scipy import stats

from recommender.ml.abtest import Interval, proportion_test, wilson_interval

Z_975 = 1.959963984540054  # the normal 97.5 % quantile


def wilson_by_hand(successes: int, trials: int) -> tuple[float, float]:
    """Wilson (1927): (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p, z, n = successes / trials, Z_975, trials
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.mark.parametrize(
    ("successes", "trials"), [(4, 9), (2, 3), (120, 400), (1, 1000), (37, 37)]
)
def test_wilson_interval_is_the_closed_form(successes, trials):
    interval = wilson_interval(successes=successes, trials=trials)

    low, high = wilson_by_hand(successes, trials)
    assert interval.low == pytest.approx(max(0.0, low), abs=1e-12)
    assert interval.high == pytest.approx(min(1.0, high), abs=1e-12)


def test_wilson_interval_of_four_in_nine_to_four_decimals():
    interval = wilson_interval(successes=4, trials=9)

    assert interval.text == "0.1888-0.7333"


def test_wilson_interval_stays_inside_zero_and_one():
    assert wilson_interval(successes=0, trials=5).low == 0.0
    assert wilson_interval(successes=5, trials=5).high == 1.0
    assert wilson_interval(successes=0, trials=5).high == pytest.approx(
        wilson_by_hand(0, 5)[1]
    )


def test_wilson_interval_narrows_with_more_trials():
    few = wilson_interval(successes=3, trials=10)
    many = wilson_interval(successes=300, trials=1000)

    assert many.high - many.low < (few.high - few.low) / 5


def test_wilson_interval_of_no_trials_is_none():
    assert wilson_interval(successes=0, trials=0) is None


def test_large_counts_use_the_pooled_z_test():
    test = proportion_test(successes_a=120, trials_a=400, successes_b=40, trials_b=400)

    # By hand: pooled p = 160/800 = 0.2; se = sqrt(0.2·0.8·(2/400)) = 0.028284;
    # z = (0.1 - 0.3) / se = -7.0711; p = 2·Φ(-7.0711) = 1.537e-12.
    assert test.method == "z"
    assert test.statistic == pytest.approx(-7.0710678, rel=1e-6)
    assert test.p_value == pytest.approx(1.5374597944e-12, rel=1e-6)
    assert test.difference == pytest.approx(-0.2)
    assert test.p_value_text == "1.5e-12"


def test_the_z_test_agrees_with_scipys_chi_square_without_correction():
    # A two-sided pooled z-test is the 2x2 chi-square test without Yates' correction.
    test = proportion_test(successes_a=100, trials_a=400, successes_b=92, trials_b=400)

    expected = stats.chi2_contingency([[100, 300], [92, 308]], correction=False)
    assert test.method == "z"
    assert test.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert test.statistic**2 == pytest.approx(expected.statistic, rel=1e-9)
    assert test.p_value_text == f"{expected.pvalue:.4f}"


def test_small_expected_counts_use_fishers_exact_test():
    # Expected successes in B: 6 · 5/26 = 1.15 < 5, so no normal approximation.
    test = proportion_test(successes_a=1, trials_a=20, successes_b=4, trials_b=6)

    expected = stats.fisher_exact([[4, 2], [1, 19]])
    assert test.method == "fisher"
    assert test.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert test.statistic == pytest.approx((4 * 19) / (2 * 1))
    assert test.difference == pytest.approx(4 / 6 - 1 / 20)


def test_fishers_test_by_hand_on_a_tiny_table():
    # [[1, 0], [0, 1]]: the hypergeometric puts 1/2 on each of the two tables with
    # these margins, both as extreme as the observed one: p = 1.
    test = proportion_test(successes_a=0, trials_a=1, successes_b=1, trials_b=1)

    assert test.method == "fisher"
    assert test.p_value == pytest.approx(1.0)


def test_identical_arms_are_not_different():
    test = proportion_test(successes_a=50, trials_a=500, successes_b=50, trials_b=500)

    assert test.statistic == 0.0
    assert test.p_value == pytest.approx(1.0)
    assert not test.significantly_lower(alpha=0.05)


def test_significantly_lower_needs_both_direction_and_significance():
    worse = proportion_test(successes_a=120, trials_a=400, successes_b=40, trials_b=400)
    better = proportion_test(
        successes_a=40, trials_a=400, successes_b=120, trials_b=400
    )
    noise = proportion_test(successes_a=100, trials_a=400, successes_b=92, trials_b=400)

    assert worse.significantly_lower(alpha=0.01)
    assert not better.significantly_lower(alpha=0.01)
    assert better.p_value < 0.01
    assert not noise.significantly_lower(alpha=0.01)
    assert noise.difference < 0


def test_an_arm_without_trials_has_no_test():
    assert proportion_test(successes_a=0, trials_a=0, successes_b=1, trials_b=3) is None


@pytest.mark.parametrize(("successes", "trials"), [(-1, 3), (4, 3), (0, -1)])
def test_impossible_counts_are_refused(successes, trials):
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(successes=successes, trials=trials)


def test_interval_text_has_four_decimals():
    assert Interval(low=0.1, high=0.25).text == "0.1000-0.2500"
