"""Statistics of an A/B test on rates per impression (like rate, match rate).

Counts in, numbers out: ``successes`` of ``trials`` per arm. The distributions come
from scipy (``binomtest``'s Wilson interval, the normal survival function, Fisher's
exact test); only the textbook arithmetic around them is written here.

* :func:`wilson_interval` — the Wilson score interval of one proportion. Unlike the
  normal ("Wald") interval it stays inside [0, 1] and keeps its coverage with few
  trials or rates near 0, which is where a like or match rate lives.
* :func:`proportion_test` — is arm B's rate different from arm A's? The pooled
  two-proportion z-test when every expected cell count of the 2x2 table is at least
  5 (Cochran's rule, where the normal approximation holds), else Fisher's exact
  test. Both two-sided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

# Cochran's rule: the z-test's normal approximation needs every expected count of
# the 2x2 table (successes and failures per arm) to be at least this.
MIN_EXPECTED_COUNT = 5.0


@dataclass(frozen=True)
class Interval:
    """A confidence interval of a proportion, ``low`` <= ``high`` in [0, 1]."""

    low: float
    high: float

    @property
    def text(self) -> str:
        """``"0.1888-0.7333"``."""
        return f"{self.low:.4f}-{self.high:.4f}"


@dataclass(frozen=True)
class ProportionTest:
    """Arm B's rate against arm A's.

    ``method`` is ``"z"`` (pooled two-proportion z-test; ``statistic`` is z, positive
    when B's rate is higher) or ``"fisher"`` (Fisher's exact test; ``statistic`` is
    the sample odds ratio of B against A, ``inf`` or ``nan`` when a cell is 0).
    ``p_value`` is two-sided; ``difference`` is rate B minus rate A.
    """

    method: str
    statistic: float
    p_value: float
    difference: float

    @property
    def p_value_text(self) -> str:
        """``"0.0312"``, or ``"1.5e-12"`` below 0.0001 (four decimals would say 0)."""
        return f"{self.p_value:.4f}" if self.p_value >= 1e-4 else f"{self.p_value:.1e}"

    def significantly_lower(self, *, alpha: float) -> bool:
        """B's rate is below A's and the difference is significant at ``alpha``."""
        return self.difference < 0 and self.p_value < alpha


def wilson_interval(
    *, successes: int, trials: int, confidence: float = 0.95
) -> Interval | None:
    """The Wilson score interval of ``successes / trials`` at ``confidence`` (no
    continuity correction); ``None`` without trials."""
    _check_counts(successes, trials)
    if trials == 0:
        return None
    ci = stats.binomtest(successes, trials).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    # binomtest's arithmetic can land a hair outside [0, 1] at 0 or n successes.
    return Interval(low=max(0.0, float(ci.low)), high=min(1.0, float(ci.high)))


def proportion_test(
    *, successes_a: int, trials_a: int, successes_b: int, trials_b: int
) -> ProportionTest | None:
    """Two-sided test of ``successes_b / trials_b`` against ``successes_a / trials_a``
    (the z-test, or Fisher's exact test for small expected counts, see the module);
    ``None`` when an arm has no trials."""
    _check_counts(successes_a, trials_a)
    _check_counts(successes_b, trials_b)
    if trials_a == 0 or trials_b == 0:
        return None
    rate_a, rate_b = successes_a / trials_a, successes_b / trials_b
    total_successes = successes_a + successes_b
    total_trials = trials_a + trials_b
    pooled = total_successes / total_trials
    smallest_expected = min(
        trials * share
        for trials in (trials_a, trials_b)
        for share in (pooled, 1.0 - pooled)
    )
    if smallest_expected < MIN_EXPECTED_COUNT:
        table = [
            [successes_b, trials_b - successes_b],
            [successes_a, trials_a - successes_a],
        ]
        result = stats.fisher_exact(table, alternative="two-sided")
        return ProportionTest(
            method="fisher",
            statistic=float(result.statistic),
            p_value=float(result.pvalue),
            difference=rate_b - rate_a,
        )
    # pooled is strictly inside (0, 1) here: both shares passed the count rule.
    standard_error = math.sqrt(pooled * (1.0 - pooled) * (1 / trials_a + 1 / trials_b))
    z = (rate_b - rate_a) / standard_error
    return ProportionTest(
        method="z",
        statistic=z,
        p_value=float(min(1.0, 2.0 * stats.norm.sf(abs(z)))),
        difference=rate_b - rate_a,
    )


def _check_counts(successes: int, trials: int) -> None:
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
