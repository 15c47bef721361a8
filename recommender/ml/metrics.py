"""Evaluation metrics: AUC, log loss and grouped top-k ranking metrics.

Inputs are 1-d arrays of one row per scored pair. The grouped metrics take a query id
per row (``groups``, e.g. the viewer's user id): rows are ranked inside their group by
descending score, the metric is computed per group and averaged over the groups with at
least one positive (a group without positives has no defined recall or NDCG).

Ties: rows with equal scores in a group are treated as ranked in uniformly random
order and the metric's *expected value* over that order is returned (McSherry & Najork,
"Computing information retrieval performance measures efficiently in the presence of
tied scores", 2008). So a constant score gets exactly the chance level, not a lucky or
unlucky tie-break, and the popularity baseline (integer counts, many ties) is judged
fairly.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (float [p]) for labels ``y``
    (bool/int [p], positive = nonzero); ties count one half. nan if a class is empty.
    """
    y = np.asarray(y) != 0
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray, *, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy of probabilities ``p`` (float [p]) for labels ``y``
    (bool/int [p]); probabilities are clipped to [eps, 1 - eps]. nan if empty."""
    y = np.asarray(y) != 0
    if y.shape[0] == 0:
        return float("nan")
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def precision_at_k(
    groups: np.ndarray, y: np.ndarray, scores: np.ndarray, k: int
) -> float:
    """Mean over groups with a positive of (expected positives in the top ``k``) / k.

    The denominator is ``k`` even when a group has fewer than ``k`` rows.
    """
    return _grouped(groups, y, scores, k)["precision"]


def recall_at_k(groups: np.ndarray, y: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Mean over groups with a positive of (expected positives in the top ``k``) /
    (positives in the group)."""
    return _grouped(groups, y, scores, k)["recall"]


def ndcg_at_k(groups: np.ndarray, y: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Mean over groups with a positive of DCG@k / ideal DCG@k, gain = ``y`` (0/1 or
    graded, >= 0), discount 1 / log2(rank + 1) with ranks from 1."""
    return _grouped(groups, y, scores, k)["ndcg"]


def ranking_metrics(
    groups: np.ndarray, y: np.ndarray, scores: np.ndarray, *, k: int = 10
) -> dict[str, float]:
    """``{"precision@k", "recall@k", "ndcg@k", "groups"}`` in one pass (same
    definitions as the single functions; ``groups`` = groups with a positive)."""
    result = _grouped(groups, y, scores, k)
    return {
        f"precision@{k}": result["precision"],
        f"recall@{k}": result["recall"],
        f"ndcg@{k}": result["ndcg"],
        "groups": result["groups"],
    }


def ndcg_by_group(
    groups: np.ndarray, y: np.ndarray, scores: np.ndarray, k: int
) -> np.ndarray:
    """float64 [G]: NDCG@k of each group (as :func:`ndcg_at_k`), groups in sorted
    order of their ids; nan for a group without a positive."""
    per_group = _by_group(groups, y, scores, k)
    if per_group is None:
        return np.zeros(0, dtype=np.float64)
    _, positives, dcg, idcg = per_group
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(positives > 0, dcg / idcg, np.nan)


def _grouped(
    groups: np.ndarray, y: np.ndarray, scores: np.ndarray, k: int
) -> dict[str, float]:
    nan = float("nan")
    per_group = _by_group(groups, y, scores, k)
    if per_group is None:
        return {"precision": nan, "recall": nan, "ndcg": nan, "groups": 0}
    hits, positives, dcg, idcg = per_group
    valid = positives > 0
    if not np.any(valid):
        return {"precision": nan, "recall": nan, "ndcg": nan, "groups": 0}
    return {
        "precision": float(np.mean(hits[valid] / k)),
        "recall": float(np.mean(hits[valid] / positives[valid])),
        "ndcg": float(np.mean(dcg[valid] / idcg[valid])),
        "groups": int(valid.sum()),
    }


def _by_group(groups: np.ndarray, y: np.ndarray, scores: np.ndarray, k: int):
    """(hits in the top k, positives, DCG@k, ideal DCG@k), float64 [G] each, per
    group in sorted order of the ids; None without rows."""
    if k < 1:
        raise ValueError("k must be >= 1")
    groups = np.asarray(groups)
    gain = np.asarray(y, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if not groups.shape == gain.shape == scores.shape:
        raise ValueError("groups, y and scores must have the same shape")
    if np.any(gain < 0):
        raise ValueError("y must be >= 0")
    if groups.shape[0] == 0:
        return None

    order = np.lexsort((-scores, groups))
    g, s, r = groups[order], scores[order], gain[order]
    p = g.shape[0]
    new_group = np.r_[True, g[1:] != g[:-1]]
    group_start = np.flatnonzero(new_group)
    group_id = np.cumsum(new_group) - 1
    rank = np.arange(p) - group_start[group_id]  # 0-based rank inside the group

    # Tie blocks: runs of equal score inside a group. Each row of a block is equally
    # likely to sit at any of the block's ranks [start, start + length).
    new_block = new_group | np.r_[True, s[1:] != s[:-1]]
    block_start = np.flatnonzero(new_block)
    block_id = np.cumsum(new_block) - 1
    block_len = np.diff(np.r_[block_start, p])[block_id]
    first = rank[block_start][block_id]
    last = first + block_len

    discount = np.zeros(int(rank.max()) + 2)
    top = min(k, discount.shape[0] - 1)
    discount[1 : top + 1] = 1.0 / np.log2(np.arange(top) + 2.0)
    cumulative = np.cumsum(discount)  # cumulative[r] = sum of discounts of ranks < r
    expected_discount = (cumulative[last] - cumulative[first]) / block_len
    in_top = (np.minimum(last, k) - np.minimum(first, k)).clip(0) / block_len

    n_groups = group_start.shape[0]
    hits = np.bincount(group_id, weights=(r > 0) * in_top, minlength=n_groups)
    positives = np.bincount(group_id, weights=r > 0, minlength=n_groups)
    dcg = np.bincount(group_id, weights=r * expected_discount, minlength=n_groups)

    # Ideal DCG: the same groups with rows sorted by gain.
    ideal = np.lexsort((-r, group_id))
    ideal_discount = cumulative[rank + 1] - cumulative[rank]
    idcg = np.bincount(group_id, weights=r[ideal] * ideal_discount, minlength=n_groups)
    return hits, positives, dcg, idcg


def exposure_concentration(shown: np.ndarray, n: int) -> dict:
    """How concentrated impressions are over the pool.

    ``shown``: int64 rows of every impression (all viewers' top-k concatenated), in
    ``[0, n)``; ``n`` members in the pool. Returns ``{"gini": Gini coefficient of the
    impression counts over all n members (0 = equal, 1 - 1/n when one member gets
    everything), "top1_share": share of impressions going to the max(1, n // 100)
    most shown members}``; both nan without impressions.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    shown = np.asarray(shown, dtype=np.int64).reshape(-1)
    if shown.size and (shown.min() < 0 or shown.max() >= n):
        raise ValueError(f"rows must lie in [0, {n})")
    counts = np.bincount(shown, minlength=n).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return {"gini": float("nan"), "top1_share": float("nan")}
    ascending = np.sort(counts)
    rank = np.arange(1, n + 1, dtype=np.float64)
    gini = 2.0 * np.dot(rank, ascending) / (n * total) - (n + 1.0) / n
    top = max(1, n // 100)
    return {"gini": float(gini), "top1_share": float(ascending[-top:].sum() / total)}
