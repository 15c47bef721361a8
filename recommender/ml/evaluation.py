"""Offline comparison of recommendation strategies on a time split.

Protocol (what ``manage.py evaluate`` and the nightly evaluate stage report):

1. **Time split** — :func:`recommender.ml.pipeline.time_split`: the last
   ``holdout_fraction`` of the interactions (by time) are the *test period*, from
   ``t_holdout`` on. Everything a strategy uses — features, embeddings, popularity
   counts, the ranking model (trained on ``[t_label, t_holdout)`` labels with
   features from before ``t_label``) — comes from interactions before
   ``t_holdout``. Nothing is ever fitted on the test period.
2. **Strategies** (:data:`STRATEGIES`), each a score for a (viewer, candidate) pair:

   * ``random`` — seeded uniform scores;
   * ``popularity`` — likes the candidate received before the cut;
   * ``content`` — interest Jaccard of the two profiles (the content candidate
     source's score);
   * ``collaborative`` — embedding affinity ``taste[viewer] · appeal[candidate]``
     (what the FAISS source searches; exact here);
   * ``pipeline`` — the two stages: the union of the candidate sources
     (collaborative 200, content 150, popular 60 by likes of the last 14 days,
     explore 20, as serving's ``recommender/candidates.py``) ranked by the ranking
     model's P(viewer likes candidate); members outside the candidates rank last;
   * ``pipeline_reciprocal`` — the same candidates ranked by P(v likes c) ×
     P(c likes v), serving's reciprocal score;
   * ``pipeline_prior`` (experimental, not served) — the same candidates ranked
     by P(v likes c) × log(2 + likes c received before the cut): the ranking
     model predicts a like *given* the pair is rated; the prior adds how likely
     the candidate is to be rated at all.

   Serving's post-processing (freshness boost, diversity) is not applied.
3. **Metrics**, ``k`` = 10:

   * ``auc`` — like vs dislike over every held-out labelled pair (for the
     pipelines: their stage-2 score; the candidate cut does not apply);
   * protocol ``everyone`` — for each sampled test viewer with a held-out like,
     every member the strategy may recommend is ranked: all members passing the
     hard filters as of the cut (visible, both sides' gender and age
     preferences, distance when both have coordinates and a limit, never
     oneself, nobody the viewer rated before the cut, nobody who blocked them).
     Relevant = held-out likes / super-likes of the viewer; every other member
     counts as not relevant (unlabelled is not known to be a dislike: this
     under-states every strategy equally). ``precision@k``, ``recall@k``,
     ``ndcg@k`` (ties count at their expected value, see ``metrics``) and
     ``mutual@k``: the share of the top-k recommended pairs that became a mutual
     like in the test period;
   * protocol ``labelled`` — the same metrics ranking only the pairs the viewer
     actually rated in the test period (in Speed Dating: the partners they met),
     scored by each strategy's score (no candidate cut).

Shapes: members and interactions are :class:`~recommender.ml.data.MemberArrays` /
:class:`~recommender.ml.data.InteractionArrays`; scores are float64 [p].
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from recommender.ml.data import (
    BLOCK,
    InteractionArrays,
    MemberArrays,
    sorted_positions,
)
from recommender.ml.embeddings import EmbeddingModel
from recommender.ml.features import FeatureStore, haversine_km, pair_features
from recommender.ml.metrics import ranking_metrics, roc_auc
from recommender.ml.pipeline import (
    Split,
    _store_and_embeddings,
    json_safe,
    labelled_pairs,
    time_split,
    train_ranking_stage,
)
from recommender.ml.ranking import RankingModel, predict_scores

STRATEGIES = (
    "random",
    "popularity",
    "content",
    "collaborative",
    "pipeline",
    "pipeline_reciprocal",
    "pipeline_prior",
)
STRATEGY_LABELS = {
    "random": "random",
    "popularity": "popularity",
    "content": "content-only",
    "collaborative": "collaborative-only",
    "pipeline": "two-stage pipeline",
    "pipeline_reciprocal": "pipeline + reciprocal",
    "pipeline_prior": "pipeline × popularity (exp.)",
}
PIPELINES = ("pipeline", "pipeline_reciprocal", "pipeline_prior")
PROTOCOLS = ("everyone", "labelled")
# Candidate source sizes, as recommender/candidates.py (COLLABORATIVE_WANT, …).
CANDIDATE_SOURCES = {"collaborative": 200, "content": 150, "popular": 60, "explore": 20}
_KEY_SHIFT = np.int64(1) << np.int64(32)


@dataclass
class EvaluationConfig:
    """Knobs of :func:`strategies_evaluate` (defaults = the nightly recipe's split)."""

    k: int = 10
    holdout_fraction: float = 0.15
    label_fraction: float = 0.15
    seed: int = 0
    max_viewers: int = 1_000
    embedding_kwargs: dict = field(default_factory=dict)
    threads: int | None = None


@dataclass
class Fitted:
    """What the strategies know at the cut: the ranking model, the feature store
    and embeddings built from interactions before ``split.t_holdout``, and the
    popularity counts (float64 [n], aligned with the store)."""

    split: Split
    model: RankingModel
    store: FeatureStore
    embeddings: EmbeddingModel
    popularity: np.ndarray
    latest_training_ts: float

    def scores(
        self, strategy: str, viewer_idx: np.ndarray, cand_idx: np.ndarray, seed: int
    ) -> np.ndarray:
        """float64 [p] stage-2 score of ``strategy`` for store rows (int64 [p])."""
        if strategy == "random":
            return np.random.default_rng(seed).random(viewer_idx.shape[0])
        if strategy == "popularity":
            return self.popularity[cand_idx]
        if strategy == "content":
            return _jaccard(self.store, viewer_idx, cand_idx)
        if strategy == "collaborative":
            return np.einsum(
                "ij,ij->i",
                self.embeddings.taste[viewer_idx],
                self.embeddings.appeal[cand_idx],
            ).astype(np.float64)
        forward = self._model_scores(viewer_idx, cand_idx)
        if strategy == "pipeline":
            return forward
        if strategy == "pipeline_reciprocal":
            return forward * self._model_scores(cand_idx, viewer_idx)
        if strategy == "pipeline_prior":
            return forward * self.popularity_prior(cand_idx)
        raise ValueError(f"unknown strategy {strategy!r}")

    def popularity_prior(self, cand_idx: np.ndarray) -> np.ndarray:
        """float64 [p] log(2 + likes received before the cut) of the candidates."""
        return np.log(2.0 + self.popularity[cand_idx])

    def _model_scores(self, viewer_idx: np.ndarray, cand_idx: np.ndarray) -> np.ndarray:
        X = pair_features(
            self.store,
            viewer_idx,
            cand_idx,
            taste=self.embeddings.taste,
            appeal=self.embeddings.appeal,
        )
        return predict_scores(self.model, X)


@dataclass
class EvaluationResult:
    """``report`` is the JSON-able result (see :func:`strategies_evaluate`);
    ``fitted`` what the strategies were fitted on (for inspection and tests)."""

    report: dict
    fitted: Fitted


def _jaccard(store: FeatureStore, v: np.ndarray, c: np.ndarray) -> np.ndarray:
    bits_v, bits_c = store.interest_bits[v], store.interest_bits[c]
    overlap = np.bitwise_count(bits_v & bits_c).sum(axis=1, dtype=np.int64)
    union = np.bitwise_count(bits_v | bits_c).sum(axis=1, dtype=np.int64)
    return overlap / np.maximum(union, 1)


def fit_at_cut(
    members: MemberArrays,
    interactions: InteractionArrays,
    *,
    config: EvaluationConfig,
    ranking_model: RankingModel | None = None,
    progress: Callable[[str], None] | None = None,
) -> Fitted:
    """Fit every strategy on the interactions before the test period.

    Without ``ranking_model`` one is trained with the nightly recipe
    (:func:`~recommender.ml.pipeline.train_ranking_stage`, same split fractions);
    with one (e.g. the version a nightly run just registered, trained on the same
    data and split), it is used as is.
    """
    report = progress or (lambda message: None)
    embedding_kwargs = {"seed": config.seed, **config.embedding_kwargs}
    if ranking_model is None:
        stage = train_ranking_stage(
            members,
            interactions,
            embedding_kwargs,
            None,
            config.seed,
            holdout_fraction=config.holdout_fraction,
            label_fraction=config.label_fraction,
            k=config.k,
            progress=report,
            threads=config.threads,
        )
        split, model = stage.split, stage.model
        store, embeddings = stage.holdout_store, stage.holdout_embeddings
    else:
        split = time_split(
            interactions,
            holdout_fraction=config.holdout_fraction,
            label_fraction=config.label_fraction,
        )
        report("holdout features")
        store, embeddings = _store_and_embeddings(
            members,
            split.history_for_holdout,
            split.t_holdout,
            embedding_kwargs,
            vocabulary=None,
        )
        model = ranking_model
    history = split.history_for_holdout
    targets = store.index_of(history.target[history.is_positive])
    popularity = np.bincount(targets[targets >= 0], minlength=store.n).astype(
        np.float64
    )
    latest = float(history.ts.max()) if history.m else float("-inf")
    return Fitted(
        split=split,
        model=model,
        store=store,
        embeddings=embeddings,
        popularity=popularity,
        latest_training_ts=latest,
    )


def strategies_evaluate(
    members: MemberArrays,
    interactions: InteractionArrays,
    *,
    config: EvaluationConfig | None = None,
    ranking_model: RankingModel | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Fit at the cut (:func:`fit_at_cut`) and evaluate every strategy (module
    docstring). ``report``: ``{"k", "protocol", "split", "counts",
    "strategies": {name: {"auc", "everyone": {...}, "labelled": {...}}},
    "timings"}`` with metrics ``precision@k``, ``recall@k``, ``ndcg@k``,
    ``mutual@k`` and ``viewers`` per protocol. Raises ValueError when the data
    cannot be split or has no held-out like."""
    config = config or EvaluationConfig()
    say = progress or (lambda message: None)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    fitted = fit_at_cut(
        members, interactions, config=config, ranking_model=ranking_model, progress=say
    )
    timings["fit"] = round(time.perf_counter() - clock, 3)
    split, store, k = fitted.split, fitted.store, config.k

    test = split.holdout_labels
    viewer_ids, cand_ids, y = labelled_pairs(test)
    v_idx, c_idx = store.index_of(viewer_ids), store.index_of(cand_ids)
    known = (v_idx >= 0) & (c_idx >= 0)
    v_idx, c_idx, y = v_idx[known], c_idx[known], y[known]
    if not np.any(y == 1):
        raise ValueError("the test period has no like to predict")
    mutual = _MutualPairs(interactions, split.t_holdout)

    say("labelled pairs")
    clock = time.perf_counter()
    strategies: dict[str, dict] = {}
    for offset, name in enumerate(STRATEGIES):
        scores = fitted.scores(name, v_idx, c_idx, seed=config.seed + offset)
        labelled = ranking_metrics(v_idx, y, scores, k=k)
        labelled[f"mutual@{k}"] = _mutual_share(
            v_idx, c_idx, scores, k, store, mutual, config.seed
        )
        strategies[name] = {"auc": roc_auc(y, scores), "labelled": labelled}
    timings["labelled"] = round(time.perf_counter() - clock, 3)

    say("ranking among everyone")
    clock = time.perf_counter()
    viewers = np.unique(v_idx[y == 1])
    rng = np.random.default_rng(config.seed)
    if viewers.shape[0] > config.max_viewers:
        viewers = np.sort(rng.choice(viewers, size=config.max_viewers, replace=False))
    everyone = _rank_everyone(fitted, members, viewers, config, mutual)
    likes_passing_filters = everyone.pop("_likes_passing_filters")
    comparisons = everyone.pop("_comparisons")
    for name in STRATEGIES:
        strategies[name]["everyone"] = everyone[name]
    timings["everyone"] = round(time.perf_counter() - clock, 3)

    liked = c_idx[y == 1]
    popular = np.argsort(-fitted.popularity, kind="stable")[
        : CANDIDATE_SOURCES["popular"]
    ]
    report = {
        "k": k,
        "strategies": strategies,
        # Paired differences over the viewers ranked among everyone, with 95 %
        # bootstrap intervals: is the pipeline's lead (or lag) more than noise?
        "comparisons_everyone": comparisons,
        "split": {
            "t_label": split.t_label,
            "t_holdout": split.t_holdout,
            "holdout_fraction": config.holdout_fraction,
            "label_fraction": config.label_fraction,
            "latest_training_ts": fitted.latest_training_ts,
            "earliest_test_ts": float(test.ts.min()),
        },
        "counts": {
            "members": members.n,
            "interactions": interactions.m,
            "training_interactions": split.history_for_holdout.m,
            "test_interactions": test.m,
            "test_likes": int(np.sum(y == 1)),
            "test_dislikes": int(np.sum(y == 0)),
            "test_viewers_with_a_like": int(np.unique(v_idx[y == 1]).shape[0]),
            "viewers_sampled_for_everyone": int(viewers.shape[0]),
            # Viewers with at least one held-out like that passes the hard filters
            # (a like of someone the filters exclude cannot be recommended).
            "viewers_ranked_among_everyone": int(everyone["random"]["viewers"]),
            "test_likes_passing_the_filters": float(likes_passing_filters),
            "mutual_pairs_formed_in_test": mutual.count,
            "ranking_model_type": fitted.model.model_type,
            # How much of the test period any history-based strategy can reach:
            "test_likes_to_members_without_earlier_likes": float(
                np.mean(fitted.popularity[liked] == 0)
            ),
            "test_likes_to_the_60_most_liked": float(np.mean(np.isin(liked, popular))),
        },
        "protocol": {
            "everyone": "each sampled test viewer with a held-out like ranks every "
            "member passing the hard filters at the cut (minus those they rated "
            "before it); relevant = held-out likes",
            "labelled": "each test viewer ranks only the members they rated in the "
            "test period (Speed Dating: the partners they met)",
            "auc": "like vs dislike over all held-out rated pairs, stage-2 scores",
            "mutual": "share of top-k recommended pairs that became a mutual like "
            "in the test period",
        },
        "timings": timings,
    }
    return EvaluationResult(report=json_safe(report), fitted=fitted)


class _MutualPairs:
    """Ordered pairs (actor, target) whose mutual like was complete in the test
    period: both final verdicts positive, at least one given at or after the cut."""

    def __init__(self, interactions: InteractionArrays, t_cut: float):
        positive = interactions.select(interactions.is_positive)
        keys = positive.actor * _KEY_SHIFT + positive.target
        reverse = positive.target * _KEY_SHIFT + positive.actor
        order = np.argsort(keys)
        keys_sorted, ts_sorted = keys[order], positive.ts[order]
        back = sorted_positions(keys_sorted, reverse)
        found = back >= 0
        later = np.maximum(positive.ts[found], ts_sorted[back[found]])
        mutual = keys[found][later >= t_cut]
        self.keys = np.unique(mutual)
        self.count = int(self.keys.shape[0] // 2)

    def contains(self, actor_ids: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
        return sorted_positions(self.keys, actor_ids * _KEY_SHIFT + target_ids) >= 0


def _top_k(scores: np.ndarray, k: int, tiebreak: np.ndarray) -> np.ndarray:
    """Positions of the ``k`` best ``scores`` (ties broken by ``tiebreak``)."""
    return np.lexsort((tiebreak, -scores))[:k]


def _mutual_share(v_idx, c_idx, scores, k, store, mutual, seed) -> float:
    """Share of each viewer's top-k rows (by ``scores``) that are mutual pairs."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(scores.shape[0]), -scores, v_idx))
    v, c = v_idx[order], c_idx[order]
    start = np.r_[0, np.flatnonzero(v[1:] != v[:-1]) + 1]
    rank = np.arange(v.shape[0]) - np.repeat(start, np.diff(np.r_[start, v.shape[0]]))
    top = rank < k
    if not np.any(top):
        return float("nan")
    hits = mutual.contains(store.user_id[v[top]], store.user_id[c[top]])
    return float(hits.mean())


def _eligible(
    store: FeatureStore,
    visible: np.ndarray,
    v: int,
    excluded: np.ndarray,
) -> np.ndarray:
    """bool [n]: the members the hard filters allow for viewer row ``v``."""
    one = np.uint8(1)
    mask = visible.copy()
    mask[v] = False
    mask &= (
        (np.uint8(store.seeking_mask[v]) >> store.gender.astype(np.uint8)) & one
    ) > 0
    mask &= ((store.seeking_mask >> np.uint8(store.gender[v])) & one) > 0
    ages = np.floor(store.age)
    viewer_age = ages[v]
    mask &= (ages >= store.min_age[v]) & (ages <= store.max_age[v])
    mask &= (store.min_age <= viewer_age) & (store.max_age >= viewer_age)
    limit = np.minimum(store.max_distance_km, store.max_distance_km[v])
    located = np.isfinite(store.lat) & np.isfinite(store.lat[v]) & np.isfinite(limit)
    if np.any(located & mask):
        rows = np.flatnonzero(located & mask)
        distance = haversine_km(
            np.full(rows.shape, store.lat[v]),
            np.full(rows.shape, store.lon[v]),
            store.lat[rows],
            store.lon[rows],
        )
        mask[rows[distance > limit[rows]]] = False
    mask[excluded] = False
    return mask


def _rank_everyone(
    fitted: Fitted,
    members: MemberArrays,
    viewers: np.ndarray,
    config: EvaluationConfig,
    mutual: _MutualPairs,
) -> dict[str, dict]:
    store, split, k = fitted.store, fitted.split, config.k
    visible = members.is_visible[members.index_of(store.user_id)]
    history = split.history_for_holdout
    h_actor, h_target = store.index_of(history.actor), store.index_of(history.target)
    ok = (h_actor >= 0) & (h_target >= 0)
    h_actor, h_target, h_kind = h_actor[ok], h_target[ok], history.kind[ok]
    test = split.holdout_labels
    t_actor, t_target = store.index_of(test.actor), store.index_of(test.target)
    t_pos = test.is_positive & (t_actor >= 0) & (t_target >= 0)
    t_actor, t_target = t_actor[t_pos], t_target[t_pos]

    # Serving's popular source and content tie-break (recommender/candidates.py):
    # likes received in the last 14 days, then the like rate.
    recent = store.likes_received_recent.astype(np.float64)
    popularity_order = np.lexsort((-store.like_rate_received, -recent))
    recent_share = np.log1p(recent) / max(np.log1p(recent.max(initial=0.0)), 1e-9)
    rng = np.random.default_rng(config.seed)
    per_viewer: dict[str, list[tuple[float, ...]]] = {name: [] for name in STRATEGIES}
    candidate_sizes: list[int] = []
    eligible_sizes: list[int] = []
    likes_seen = [0, 0]  # held-out likes of the sampled viewers, of them eligible
    keys = (f"precision@{k}", f"recall@{k}", f"ndcg@{k}")

    for v in viewers.tolist():
        excluded = np.concatenate(
            [
                h_target[h_actor == v],
                h_actor[(h_target == v) & (h_kind == BLOCK)],
            ]
        )
        mask = _eligible(store, visible, v, excluded)
        allowed = np.flatnonzero(mask)
        liked = t_target[t_actor == v]
        likes_seen[0] += int(np.unique(liked).size)
        y = np.isin(allowed, liked).astype(np.int8)
        likes_seen[1] += int(y.sum())
        if not y.any():
            continue
        eligible_sizes.append(int(allowed.size))
        viewer_rows = np.full(allowed.size, v, dtype=np.int64)
        base = {
            name: fitted.scores(
                name, viewer_rows, allowed, seed=int(rng.integers(2**31))
            )
            for name in ("random", "popularity", "content", "collaborative")
        }
        candidates = _candidates(
            allowed, base, recent_share[allowed], popularity_order, mask, rng
        )
        candidate_sizes.append(int(candidates.size))
        chosen = np.flatnonzero(np.isin(allowed, candidates))
        forward = fitted.scores("pipeline", viewer_rows[chosen], allowed[chosen], 0)
        backward = fitted.scores("pipeline", allowed[chosen], viewer_rows[chosen], 0)
        for name, values in (
            ("pipeline", forward),
            ("pipeline_reciprocal", forward * backward),
            ("pipeline_prior", forward * fitted.popularity_prior(allowed[chosen])),
        ):
            scores = np.full(allowed.size, -np.inf)
            scores[chosen] = values
            base[name] = scores
        tiebreak = rng.random(allowed.size)
        for name in STRATEGIES:
            scores = base[name]
            metrics = ranking_metrics(viewer_rows, y, scores, k=k)
            top = _top_k(scores, k, tiebreak)
            hits = mutual.contains(
                np.full(top.size, store.user_id[v]), store.user_id[allowed[top]]
            )
            per_viewer[name].append(
                (*(metrics[key] for key in keys), float(hits.mean()))
            )

    result: dict = {}
    for name in STRATEGIES:
        values = np.asarray(per_viewer[name], dtype=np.float64).reshape(-1, 4)
        metrics = {
            key: float(values[:, j].mean()) if values.shape[0] else float("nan")
            for j, key in enumerate((*keys, f"mutual@{k}"))
        }
        metrics["viewers"] = int(values.shape[0])
        metrics[f"ndcg@{k}_ci95"] = _bootstrap_ci(values[:, 2], config.seed)
        if eligible_sizes:
            metrics["mean_eligible"] = float(np.mean(eligible_sizes))
        if name in PIPELINES and candidate_sizes:
            metrics["mean_candidates"] = float(np.mean(candidate_sizes))
        result[name] = metrics
    ndcg = {
        name: np.asarray(per_viewer[name], dtype=np.float64).reshape(-1, 4)[:, 2]
        for name in STRATEGIES
    }
    result["_comparisons"] = {
        f"{a}_minus_{b}": {
            f"ndcg@{k}": float(np.mean(ndcg[a] - ndcg[b])) if ndcg[a].size else None,
            "ci95": _bootstrap_ci(ndcg[a] - ndcg[b], config.seed),
        }
        for a in PIPELINES
        for b in ("popularity", "random", "collaborative", "content")
    }
    result["_likes_passing_filters"] = likes_seen[1] / max(likes_seen[0], 1)
    return result


def _bootstrap_ci(values: np.ndarray, seed: int, resamples: int = 1_000) -> list:
    """95 % percentile bootstrap interval of the mean of ``values`` (float [v],
    one per viewer); ``[None, None]`` without values."""
    if values.shape[0] == 0:
        return [None, None]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, values.shape[0], size=(resamples, values.shape[0]))
    means = values[draws].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def _candidates(
    allowed: np.ndarray,
    base: dict[str, np.ndarray],
    recent_share: np.ndarray,
    popularity_order: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Store rows of the merged candidate sources (as serving's candidates.py;
    ``recent_share`` float [a] = log-scaled recent likes of the ``allowed`` rows)."""
    sizes = CANDIDATE_SOURCES
    found = [
        allowed[_best(base["collaborative"], sizes["collaborative"])],
        allowed[
            _best(
                base["content"] + 1e-3 * recent_share,
                sizes["content"],
            )
        ],
        popularity_order[mask[popularity_order]][: sizes["popular"]],
        rng.choice(allowed, size=min(sizes["explore"], allowed.size), replace=False),
    ]
    return np.unique(np.concatenate(found))


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    if scores.shape[0] <= k:
        return np.arange(scores.shape[0])
    return np.argpartition(-scores, k - 1)[:k]


# --- reports --------------------------------------------------------------------------

_METRIC_COLUMNS = ("precision@{k}", "recall@{k}", "ndcg@{k}", "mutual@{k}")


def report_table(report: dict, *, protocol: str) -> list[list[str]]:
    """Rows (header first) of one protocol's table: strategy, AUC and the top-k
    metrics, values to 3 decimals ("–" where undefined)."""
    k = report["k"]
    columns = [c.format(k=k) for c in _METRIC_COLUMNS]
    table = [["strategy", "AUC", *columns]]
    for name in STRATEGIES:
        entry = report["strategies"][name]
        metrics = entry[protocol]
        table.append(
            [
                STRATEGY_LABELS[name],
                _fmt(entry["auc"]),
                *(_fmt(metrics.get(c)) for c in columns),
            ]
        )
    return table


def _fmt(value) -> str:
    return "–" if value is None or value != value else f"{value:.3f}"


def report_markdown(report: dict, *, title: str, chart: str | None = None) -> str:
    """The report as Markdown: both protocols' tables, the split and counts."""
    lines = [f"## {title}", ""]
    counts = report["counts"]
    lines.append(
        f"{counts['members']:,} members, {counts['interactions']:,} interactions; "
        f"trained on {counts['training_interactions']:,} before the cut, tested on "
        f"{counts['test_interactions']:,} after it ({counts['test_likes']:,} likes, "
        f"{counts['test_dislikes']:,} dislikes; "
        f"{counts['mutual_pairs_formed_in_test']:,} mutual likes completed). "
        f"{counts['viewers_ranked_among_everyone']:,} viewers ranked among everyone. "
        f"Ranking model: {counts['ranking_model_type']}. Of the test likes, "
        f"{counts['test_likes_to_members_without_earlier_likes']:.0%} went to members "
        "no one had liked before the cut and "
        f"{counts['test_likes_to_the_60_most_liked']:.0%} to the "
        f"{CANDIDATE_SOURCES['popular']} most liked."
    )
    lines.append("")
    for protocol, heading in (
        ("everyone", "Ranked among everyone the strategy may recommend"),
        ("labelled", "Ranked among the pairs rated in the test period"),
    ):
        lines += [f"**{heading}** (AUC: like vs dislike on held-out pairs)", ""]
        table = report_table(report, protocol=protocol)
        lines.append("| " + " | ".join(table[0]) + " |")
        lines.append("|" + "---|" * len(table[0]))
        lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
        lines.append("")
    k = report["k"]
    diffs = report.get("comparisons_everyone") or {}
    for name in (f"{a}_minus_popularity" for a in PIPELINES):
        diff = diffs.get(name)
        if diff and diff.get(f"ndcg@{k}") is not None:
            low, high = diff["ci95"]
            a, b = name.split("_minus_")
            lines.append(
                f"- NDCG@{k} among everyone, {STRATEGY_LABELS[a]} − "
                f"{STRATEGY_LABELS[b]}: {diff[f'ndcg@{k}']:+.3f} "
                f"(95 % bootstrap interval over viewers {low:+.3f} … {high:+.3f})"
            )
    lines.append("")
    if chart:
        lines += [f"![{title}]({chart})", ""]
    return "\n".join(lines)


def report_chart(report: dict, path, *, title: str) -> None:
    """Write a PNG bar chart comparing the strategies (AUC, NDCG@k both protocols,
    recall@k) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = report["k"]
    panels = (
        ("AUC (like vs dislike)", lambda e: e["auc"]),
        (f"NDCG@{k}, among everyone", lambda e: e["everyone"][f"ndcg@{k}"]),
        (f"recall@{k}, among everyone", lambda e: e["everyone"][f"recall@{k}"]),
        (f"NDCG@{k}, among rated pairs", lambda e: e["labelled"][f"ndcg@{k}"]),
    )
    labels = [STRATEGY_LABELS[name] for name in STRATEGIES]
    colors = [
        "#9e9e9e",
        "#bdbdbd",
        "#90caf9",
        "#64b5f6",
        "#1e88e5",
        "#0d47a1",
        "#ffb74d",
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 3.6), dpi=80)
    for ax, (name, get) in zip(axes, panels, strict=True):
        values = [get(report["strategies"][s]) for s in STRATEGIES]
        values = [0.0 if v is None else v for v in values]
        ax.barh(labels, values, color=colors)
        ax.set_title(name, fontsize=10)
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
        for i, value in enumerate(values):
            ax.text(value, i, f" {value:.3f}", va="center", fontsize=7)
        ax.set_xlim(0, max(max(values) * 1.25, 0.05))
        if ax is not axes[0]:
            ax.set_yticklabels([])
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
