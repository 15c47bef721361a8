import dataclasses
import json

import numpy as np
import pytest

from recommender.ml import synthetic
from recommender.ml.cut import (
    candidate_rows,
    cut_state,
    labelled_pair_matrices,
    labelled_pairs,
    time_split,
)
from recommender.ml.data import KIND_CODES, InteractionArrays, from_synthetic
from recommender.ml.objective import evaluate_everyone
from recommender.ml.pipeline import (
    HOLDOUT_MAX_VIEWERS,
    evaluate_ranking,
    json_safe,
    train_ranking_stage,
)
from recommender.ml.recommend import candidates_for


def _interactions(ts) -> InteractionArrays:
    ts = np.asarray(ts, dtype=np.float64)
    m = ts.shape[0]
    return InteractionArrays(
        actor=np.arange(m, dtype=np.int64),
        target=np.arange(m, dtype=np.int64) + 1,
        kind=np.zeros(m, dtype=np.int8),
        ts=ts,
    )


@pytest.mark.parametrize(
    "ts",
    [
        np.random.default_rng(0).permutation(np.arange(1_000, dtype=float)),
        np.repeat(np.arange(50, dtype=float), 20),  # many ties at every cut
    ],
)
def test_time_split_never_leaks_the_future(ts):
    interactions = _interactions(ts)

    split = time_split(interactions, holdout_fraction=0.15, label_fraction=0.15)

    assert split.t_label < split.t_holdout
    assert split.training_labels.ts.max() < split.holdout_labels.ts.min()
    assert split.history_for_training.ts.max() < split.training_labels.ts.min()
    assert split.history_for_holdout.ts.max() < split.holdout_labels.ts.min()
    assert np.all(split.history_for_training.ts < split.t_label)
    assert np.all(split.history_for_holdout.ts < split.t_holdout)
    assert (
        split.history_for_training.m + split.training_labels.m
        == split.history_for_holdout.m
    )
    assert split.history_for_holdout.m + split.holdout_labels.m == interactions.m
    assert 0.1 < split.holdout_labels.m / interactions.m < 0.2
    assert 0.1 < split.training_labels.m / interactions.m < 0.2


def test_time_split_cuts_a_history_of_changed_verdicts_at_each_cut():
    """Pair 500->501 liked at 5, changed into a pass after the holdout cut; pair
    600->601 liked at 3, changed into a pass inside the training label window."""
    like, dislike = KIND_CODES["like"], KIND_CODES["dislike"]
    others = _interactions(np.arange(100.0))
    interactions = InteractionArrays(
        actor=np.concatenate([others.actor, [500, 500, 600, 600]]),
        target=np.concatenate([others.target, [501, 501, 601, 601]]),
        kind=np.concatenate([others.kind, [like, dislike, like, dislike]]),
        ts=np.concatenate([others.ts, [5.0, 95.0, 3.0, 75.0]]),
        until=np.concatenate([np.full(100, np.inf), [95.0, np.inf, 75.0, np.inf]]),
    )

    split = time_split(interactions, holdout_fraction=0.15, label_fraction=0.15)

    def kinds(part, actor):
        return part.kind[part.actor == actor].tolist()

    assert split.t_label < 75.0 < split.t_holdout < 95.0
    assert kinds(split.history_for_training, 500) == [like]
    assert kinds(split.history_for_holdout, 500) == [like]
    assert kinds(split.holdout_labels, 500) == [dislike]
    assert kinds(split.history_for_training, 600) == [like]
    assert kinds(split.training_labels, 600) == [dislike]
    assert kinds(split.history_for_holdout, 600) == [dislike]
    assert kinds(split.holdout_labels, 600) == []


def test_time_split_refuses_what_it_cannot_split():
    with pytest.raises(ValueError):
        time_split(_interactions(np.zeros(100)))
    with pytest.raises(ValueError):
        time_split(InteractionArrays.empty())
    with pytest.raises(ValueError):
        time_split(
            _interactions(np.arange(10.0)), holdout_fraction=0.6, label_fraction=0.5
        )


def test_labelled_pairs_mark_likes_positive():
    k = KIND_CODES
    labels = InteractionArrays(
        actor=np.array([1, 2, 3, 4]),
        target=np.array([5, 6, 7, 8]),
        kind=np.array([k["like"], k["super_like"], k["dislike"], k["block"]], np.int8),
        ts=np.zeros(4),
    )

    viewers, candidates, y = labelled_pairs(labels)

    assert viewers.tolist() == [1, 2, 3, 4] and candidates.tolist() == [5, 6, 7, 8]
    assert y.tolist() == [1, 1, 0, 0] and y.dtype == np.int8


@pytest.fixture(scope="module")
def stage():
    dataset = synthetic.generate_dataset(n_members=4_000, seed=21)
    members, interactions = from_synthetic(dataset)
    result = train_ranking_stage(members, interactions, {"dim": 16}, None, 0)
    return members, interactions, result


def test_the_ranker_learns_who_is_chosen_among_the_served_candidates(stage):
    _, _, result = stage
    metrics = result.metrics
    validation = metrics["validation_ndcg"]

    # On viewers it never saw, among the candidates serving would rank:
    assert validation["model"] > validation["random"] + 0.05
    assert validation["model"] > validation["popularity"]
    # On this small planted set "liked you" carries most of what can be known;
    # the model must at least match it (it wins on the real data sets).
    assert validation["model"] > 0.97 * validation["liked_you_then_popularity"]
    assert metrics["training_likes_retrieved"] > 0.5
    assert metrics["reciprocal_weight"] in (0.0, 0.25, 0.5, 1.0)
    # The weight is the match probability's (1) unless another beat it beyond doubt.
    weights = metrics["reciprocal_weight_advantage"]
    assert set(weights) == {"0.0", "0.25", "0.5"}
    validation_of = metrics["reciprocal_weight_validation"]
    for weight, (advantage, lower) in weights.items():
        assert advantage == pytest.approx(
            validation_of[weight] - validation_of["1.0"], abs=1e-9
        )
        assert lower <= advantage
    chosen = str(metrics["reciprocal_weight"])
    if chosen == "1.0":
        assert all(lower <= 0 for _, lower in weights.values())
    else:
        assert weights[chosen][1] > 0
        assert weights[chosen][0] == max(a for a, low in weights.values() if low > 0)
    # The guard weighed the model against the simple orders on the same objective,
    # and kept the model: it is better than them here.
    orders = metrics["order_validation"]
    assert set(orders) == {"model", "popularity", "liked_you_then_popularity"}
    assert metrics["order"] == result.model.order == "model"
    assert orders["model"] >= max(
        orders["popularity"], orders["liked_you_then_popularity"]
    )
    for order, (advantage, lower) in metrics["order_advantage"].items():
        # The advantage is the difference of the objectives reported beside it.
        assert advantage == pytest.approx(orders[order] - orders["model"], abs=1e-9)
        assert lower <= advantage
    for key in ("auc", "log_loss", "precision@10", "ndcg@10", "holdout_rows"):
        assert key in metrics
    assert metrics["baseline_random"]["auc"] == pytest.approx(0.5, abs=0.03)
    assert metrics["train_rows"] > 0 and metrics["validation_rows"] > 0
    # A fifth of the latest window's viewers validate, each counted once however
    # many candidate rows they have.
    latest = metrics["latest_window_viewers"]
    assert metrics["validation_viewers"] == round(0.2 * latest)


def test_every_training_window_is_built_on_its_own_past_only(stage):
    _, interactions, result = stage
    split = result.split
    windows = result.metrics["training_windows"]

    assert windows[0] == [split.t_label, split.t_holdout]
    assert len(windows) == 4  # DEFAULT_TRAINING_WINDOWS, all with history before
    for later, earlier in zip(windows, windows[1:], strict=False):
        assert earlier[1] == later[0] and earlier[0] < earlier[1]
    assert windows[-1][0] > interactions.ts.min()
    assert result.holdout.now_ts == split.t_holdout
    # Every interaction the holdout features counted happened before the holdout.
    store = result.holdout.population.store
    assert store.n_given.sum() == split.history_for_holdout.m
    # The holdout pairs: every labelled pair of a sample of viewers.
    scored = np.unique(result.holdout_pairs[0])
    assert scored.shape[0] == min(
        HOLDOUT_MAX_VIEWERS, np.unique(split.holdout_labels.actor).shape[0]
    )
    of_scored = np.isin(split.holdout_labels.actor, scored)
    assert result.holdout_pairs[0].shape[0] == int(of_scored.sum())
    assert split.holdout_labels.m + split.history_for_holdout.m == interactions.m


def test_evaluate_ranking_reproduces_the_stage_metrics(stage):
    _, _, result = stage
    model, metrics = result  # unpacks like a (model, metrics) tuple

    again = evaluate_ranking(model, result.holdout, result.holdout_pairs)

    assert again["auc"] == pytest.approx(metrics["auc"])
    assert again["ndcg@10"] == pytest.approx(metrics["ndcg@10"])
    assert again["rows"] == metrics["holdout_rows"]


def test_the_holdout_is_also_ranked_among_everyone(stage):
    """The gate's first measure: the holdout viewers' served candidates at the
    holdout cut, labelled by the holdout period, ranked as serving ranks them."""
    _, _, result = stage
    rows = result.everyone_rows
    measured = result.metrics["holdout_everyone"]
    assert rows is not None and measured["viewers"] > 20
    # Every viewer liked someone in the holdout period; the rows are theirs.
    holdout = result.split.holdout_labels
    assert set(rows.viewer.tolist()) <= set(holdout.actor[holdout.is_positive].tolist())
    assert rows.y.any() and rows.mutual.any()

    again = evaluate_everyone(result.model, rows)
    assert again == pytest.approx(measured)
    assert again["objective"] == pytest.approx(
        again["ndcg@10"] + again["mutual_ndcg@10"]
    )
    # It scores whatever the model serves: a popularity order, on the same rows,
    # scores differently (and here worse: the model learned more than that).
    popular = dataclasses.replace(result.model, order="popularity")
    assert evaluate_everyone(popular, rows)["objective"] < again["objective"]
    assert again["ndcg@10"] > 0.1


def test_a_second_model_is_scored_on_the_stage_rows_without_new_features(
    stage, monkeypatch
):
    """The promotion gate scores the active version on the rows the stage built:
    same figures as from the pairs, and no feature computed again."""
    _, _, result = stage
    from_pairs = evaluate_ranking(result.model, result.holdout, result.holdout_pairs)

    def no_features(*args, **kwargs):
        raise AssertionError("holdout features computed again")

    monkeypatch.setattr("recommender.ml.cut.labelled_pair_matrices", no_features)
    from_rows = evaluate_ranking(
        result.model, result.holdout, result.holdout_pairs, rows=result.holdout_rows
    )
    assert from_rows == from_pairs


def test_training_rows_stop_near_the_cap(stage):
    members, interactions, _ = stage

    result = train_ranking_stage(
        members, interactions, {"dim": 8}, None, 1, max_train_rows=5_000
    )

    # Each of the 4 windows stops after the viewer that crosses a quarter of it.
    assert 2_500 <= result.metrics["candidate_rows"] <= 5_000 + 4 * 1_500
    assert 0 < result.metrics["train_rows"] < result.metrics["candidate_rows"]


def test_training_rows_are_served_candidates_and_unanswered_impressions():
    dataset = synthetic.generate_dataset(n_members=3_000, seed=4)
    members, interactions = from_synthetic(dataset)
    split = time_split(interactions)
    state = cut_state(
        members, split.history_for_training, split.t_label, {"dim": 8}, index="exact"
    )
    labels = split.training_labels
    store = state.population.store
    for viewer in np.unique(labels.actor[labels.is_positive]).tolist():
        context = state.context(state.viewer(viewer))
        found = candidates_for(
            state.population,
            context,
            embedding=state.embedding,
            rng=np.random.default_rng(0),
        )
        liked = store.index_of(
            labels.target[(labels.actor == viewer) & labels.is_positive]
        )
        allowed = np.flatnonzero(context.mask)
        unfound = allowed[~np.isin(allowed, found.positions)]
        if np.isin(liked, found.positions).any() and unfound.size:
            break  # a like a source retrieves, and members no source found
    shown_row = int(unfound[-1])
    shown = InteractionArrays(
        actor=np.array([viewer]),
        target=state.population.store.user_id[[shown_row]],
        kind=np.zeros(1, np.int8),
        ts=np.array([split.t_label + 1.0]),
    )

    rows = candidate_rows(
        state,
        labels.select(labels.actor == viewer),
        max_viewers=10,
        max_rows=10_000,
        seed=0,
        impressions=shown,
    )

    assert set(rows.viewer.tolist()) == {viewer}
    assert np.unique(rows.row).shape[0] == rows.p
    assert context.mask[rows.row].all()  # only members serving may show
    assert set(rows.row[rows.y == 1].tolist()) <= set(liked.tolist())
    assert rows.row[~rows.retrieved].tolist() == [shown_row]  # the impression
    assert rows.y[~rows.retrieved].tolist() == [int(shown_row in liked)]
    assert rows.retrieved.sum() == found.k
    # Who passed on the viewer before the cut, as serving's combine reads it.
    history = state.viewer(viewer).history
    passers = history.actor[(history.target == viewer) & ~history.is_positive]
    assert sorted(store.user_id[context.signals.passers].tolist()) == sorted(
        set(passers.tolist()) & set(store.user_id.tolist())
    )
    assert (
        rows.passed_viewer.tolist()
        == np.isin(store.user_id[rows.row], passers).tolist()
    )
    # Not vacuous: some of the viewer's candidates had passed on them.
    assert rows.passed_viewer.any()


def test_scored_pairs_know_which_candidate_passed_on_the_viewer(stage):
    """The holdout (and the promotion gate) score pairs as serving does: the
    candidate's own pass on the viewer, not the viewer's pass on them."""
    _, _, result = stage
    state = result.holdout
    history = state.history.history
    passes = history.select(~history.is_positive)
    assert passes.m > 0
    viewer_ids = np.concatenate([passes.target, passes.actor])
    cand_ids = np.concatenate([passes.actor, passes.target])

    _, _, kept, passed = labelled_pair_matrices(state, viewer_ids, cand_ids)

    pass_pairs = set(zip(passes.actor.tolist(), passes.target.tolist(), strict=True))
    expected = [
        (c, v) in pass_pairs
        for v, c in zip(viewer_ids[kept].tolist(), cand_ids[kept].tolist(), strict=True)
    ]
    assert passed.tolist() == expected
    first_half = int(kept[: passes.m].sum())
    assert passed[:first_half].all()  # the candidate passed on the viewer
    assert not passed[first_half:].all()  # the viewer passed on the candidate
    # The pass keys are sorted once per state, whatever number of scorings.
    assert state.history.pass_keys is state.history.pass_keys


def test_stage_metrics_are_storable_as_json(stage):
    _, _, result = stage

    json.dumps(result.metrics, allow_nan=False)
    assert json_safe({"a": [float("nan"), np.float32(1.5)], "b": np.int64(2)}) == {
        "a": [None, 1.5],
        "b": 2,
    }
