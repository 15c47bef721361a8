import math

import numpy as np
import pytest

from recommender.ml.metrics import (
    log_loss,
    ndcg_at_k,
    ndcg_by_group,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
    roc_auc,
)

D2 = 1 / math.log2(3)  # discount of rank 2


def test_auc_counts_ordered_pairs():
    assert roc_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.75)
    assert roc_auc([1, 0], [0.2, 0.9]) == 0.0


def test_auc_counts_ties_as_half():
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([1, 1, 0], [0.3, 0.5, 0.3]) == pytest.approx(0.75)


def test_auc_is_nan_with_one_class():
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_log_loss_by_hand():
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert log_loss([1, 0], [0.8, 0.4]) == pytest.approx(expected)
    assert math.isfinite(log_loss([1, 0], [0.0, 1.0]))  # clipped, not inf


# group 1: the positives are at ranks 2 and 3; group 2 has no positive (ignored);
# group 3: the positive is tied with a negative for ranks 1-2.
GROUPS = np.array([1, 1, 1, 2, 2, 3, 3, 3])
Y = np.array([0, 1, 1, 0, 0, 1, 0, 0])
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.5, 0.5, 0.1])


def test_grouped_metrics_by_hand_at_2():
    assert precision_at_k(GROUPS, Y, SCORES, 2) == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert recall_at_k(GROUPS, Y, SCORES, 2) == pytest.approx((1 / 2 + 1) / 2)
    group1 = D2 / (1 + D2)
    group3 = (1 + D2) / 2  # expected over the two orders of the tie
    assert ndcg_at_k(GROUPS, Y, SCORES, 2) == pytest.approx((group1 + group3) / 2)


def test_grouped_metrics_by_hand_at_1_split_the_tie():
    assert precision_at_k(GROUPS, Y, SCORES, 1) == pytest.approx((0 + 0.5) / 2)
    assert recall_at_k(GROUPS, Y, SCORES, 1) == pytest.approx((0 + 0.5) / 2)
    assert ndcg_at_k(GROUPS, Y, SCORES, 1) == pytest.approx((0 + 0.5) / 2)


def test_grouped_metrics_ignore_row_order():
    order = np.random.default_rng(0).permutation(GROUPS.shape[0])
    expected = ranking_metrics(GROUPS, Y, SCORES, k=2)

    shuffled = ranking_metrics(GROUPS[order], Y[order], SCORES[order], k=2)

    assert shuffled == pytest.approx(expected)
    assert expected["groups"] == 2


def test_constant_scores_give_the_chance_level():
    groups = np.zeros(10, dtype=int)
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])

    assert precision_at_k(groups, y, np.zeros(10), 5) == pytest.approx(0.2)
    assert recall_at_k(groups, y, np.zeros(10), 5) == pytest.approx(0.5)


def test_perfect_ranking_has_ndcg_one_and_graded_gains_count():
    groups = np.array([7, 7, 7])
    assert ndcg_at_k(groups, [2, 1, 0], [3.0, 2.0, 1.0], 3) == pytest.approx(1.0)
    swapped = (1 + 2 * D2) / (2 + D2)
    assert ndcg_at_k(groups, [2, 1, 0], [2.0, 3.0, 1.0], 3) == pytest.approx(swapped)


def test_no_group_with_a_positive_gives_nan():
    assert math.isnan(ndcg_at_k([1, 1], [0, 0], [0.3, 0.2], 10))
    assert math.isnan(precision_at_k([], [], [], 10))


def test_ndcg_by_group_is_each_groups_ndcg_and_averages_to_ndcg_at_k():
    groups = np.array([7, 7, 7, 3, 3, 3, 5, 5])
    y = np.array([1, 0, 0, 0, 0, 1, 0, 0])
    scores = np.array([0.9, 0.5, 0.1, 0.8, 0.7, 0.6, 0.3, 0.2])
    per_group = ndcg_by_group(groups, y, scores, 2)
    # Sorted by group id: 3 (its like third: outside the top 2), 5 (no like), 7.
    assert per_group[0] == 0.0 and np.isnan(per_group[1]) and per_group[2] == 1.0
    assert np.nanmean(per_group) == ndcg_at_k(groups, y, scores, 2)
    assert ndcg_by_group(groups[:0], y[:0], scores[:0], 2).shape == (0,)
