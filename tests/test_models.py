"""Model contracts on small data with known answers (checkerboard: the withheld item returns)."""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

from batch import pipeline
from batch.interactions import Interactions
from batch.models import SOURCES, fit_source
from batch.models.popularity import popularity_scores as scores
from batch.models.popularity import top_popular
from batch.models.signal import signal
from batch.models.svd import train_svd
from batch.movielens_ratings import load_dir
from batch.params import Params


@pytest.fixture
def data(board):
    directory, withheld = board
    ratings, movies = load_dir(directory)
    return Interactions.from_ratings(ratings), movies, withheld


# Small settings every source is fitted with in the contract test (the rest: the declared defaults).
SMALL = Params(als_factors=2, als_iterations=15, als_regularization=0.01, svd_factors=2, svd_epochs=30,
               svd_lr=0.02, ease_l2=1.0, ease_weighting="likes", knn_neighbours=30, knn_weighting="likes",
               popularity_rule="count")


def _fitted(data, name):
    inter, movies, _ = data
    genres = pipeline.item_genres(inter, movies) if name == "content" else None
    return fit_source(name, inter, SMALL, genres)


@pytest.mark.parametrize("name", SOURCES)
def test_every_source_keeps_the_contract(data, name):
    """At most n items, seen items excluded, sorted and distinct, unknown users handled, batched equals
    one by one."""
    inter, _, withheld = data
    model = _fitted(data, name)
    users = np.arange(inter.n_users)
    ids, scores = model.recommend(users, inter.matrix, 5)
    assert ids.shape == (inter.n_users, 5) and scores.shape == ids.shape and ids.dtype == np.int64
    assert ((ids == -1) == ~np.isfinite(scores)).all()
    for u in users:  # never a seen item
        assert not set(inter.matrix[u].indices) & set(ids[u][ids[u] >= 0])
    finite = np.where(np.isfinite(scores), scores, -1e9)
    assert (np.diff(finite, axis=1) <= 1e-6).all()  # best first
    for row in ids:
        valid = row[row >= 0]
        assert len(valid) == len(set(valid)) and (row[len(valid):] == -1).all()  # distinct, padded at the end
    for u in (0, 3, inter.n_users - 1):  # batched equals one by one
        one_ids, one_scores = model.recommend(np.array([u]), inter.matrix, 5)
        np.testing.assert_array_equal(one_ids[0], ids[u])
        np.testing.assert_allclose(one_scores[0], scores[u], rtol=1e-5)
    # unknown users (no row in the fitted data): no error, nothing they could not be served
    unknown_ids, _ = model.recommend(np.array([-1, inter.n_users, 0]), inter.matrix, 5)
    np.testing.assert_array_equal(unknown_ids[2], ids[0])
    if name == "popularity":  # the cold-start list as is
        np.testing.assert_array_equal(unknown_ids[0], model.top(5)[0])
    else:
        assert (unknown_ids[:2] == -1).all()
    # more than the catalogue: n is capped, short rows padded with -1
    wide_ids, _ = model.recommend(users[:3], inter.matrix, inter.n_items + 10)
    assert wide_ids.shape == (3, inter.n_items) and (wide_ids == -1).any()
    # nothing excluded: every item may come back
    free, _ = model.recommend(users[:2], None, inter.n_items)
    assert (free >= 0).sum() >= (wide_ids[:2] >= 0).sum()
    # the withheld movie of each user's own taste group comes back (first, for the factor models)
    withheld_idx = inter.item_index(np.array([withheld[int(uid)] for uid in inter.user_ids]))
    if name == "popularity":
        return
    if name in ("als", "ease"):
        assert (ids[:, 0] == withheld_idx).mean() == 1.0
    else:
        assert np.mean([withheld_idx[u] in ids[u] for u in users]) >= 0.9


def test_ease_on_a_bounded_item_set_scores_only_the_most_liked_movies(data):
    inter = data[0]
    full = fit_source("ease", inter, SMALL)
    bounded = fit_source("ease", inter, SMALL.with_(ease_items=10))
    likes = np.bincount(inter.matrix.indices, weights=inter.matrix.data >= 4, minlength=inter.n_items)
    assert len(bounded.columns) == 10 and bounded.weights.shape == (10, 10)
    assert likes[bounded.columns].min() >= np.sort(likes)[-10]
    ids, _ = bounded.recommend(np.arange(inter.n_users), inter.matrix, 5)
    assert set(ids[ids >= 0]) <= set(bounded.columns)
    assert full.weights.shape == (inter.n_items, inter.n_items)
    cands = np.tile(np.arange(inter.n_items), (3, 1))
    scored = bounded.score(np.arange(3), cands)
    outside = np.setdiff1d(np.arange(inter.n_items), bounded.columns)
    assert np.isneginf(scored[:, outside]).all() and np.isfinite(scored[:, bounded.columns]).all()


def test_model_fits_declare_no_default_of_their_own():
    """Every model's fit takes its settings keyword-only and without a default: params.py is their one
    home.  Only runtime arguments that are not settings (ALS's threads and widen) may have one."""
    runtime = {"threads", "widen"}
    for name in SOURCES:
        fit = importlib.import_module(f"batch.models.{name}").fit
        signature = inspect.signature(fit)
        settings = set(Params().kwargs(name))
        keyword_only = {p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY}
        assert keyword_only - runtime == settings, name  # exactly its group's settings
        for p in signature.parameters.values():
            if p.name in settings:
                assert p.default is p.empty, f"{name}.fit declares {p.name}={p.default!r}"
            elif p.default is not p.empty:
                assert p.name in runtime, f"{name}.fit declares a default for {p.name}"


def test_signals():
    import scipy.sparse as sp

    m = sp.csr_matrix(np.array([[5, 0, 2], [0, 4, 3]], dtype=np.float32))
    data = Interactions(np.arange(2), np.arange(3), m, np.array([100, 100, 86400 * 2, 86400 * 4]))

    def sig(weighting, threshold=4.0, days=0.0):
        return signal(data, weighting=weighting, like_threshold=threshold, recency_days=days)

    assert sig("raw").data.tolist() == [5, 2, 4, 3]
    assert sig("binary").data.tolist() == [1, 1, 1, 1]
    assert sig("liked").data.tolist() == [2, 1, 2, 1]
    assert sig("liked", threshold=5.0).data.tolist() == [2, 1, 1, 1]
    assert sig("likes").toarray().tolist() == [[1, 0, 0], [0, 1, 0]]
    np.testing.assert_allclose(sig("graded").data, [1, 0.1, 1, 0.3])
    assert sig("bm25").nnz == 4 and (sig("bm25").data >= 0).all()
    # user 1's newest rating is its 3 (day 4); its 4, two days before, counts half at a 2-day half-life
    np.testing.assert_allclose(sig("binary", days=2.0).data, [1, 1, 0.5, 1])
    with pytest.raises(ValueError, match="unknown weighting"):
        sig("nope")


def test_svd_vectorised_scores_equal_surprise_predict(data):
    inter = data[0]
    model, algo = train_svd(inter.matrix, inter.user_ids, inter.item_ids, factors=5, epochs=5, lr=0.005,
                            reg=0.02, seed=42)
    users = np.arange(inter.n_users)
    items = np.tile(np.arange(inter.n_items), (inter.n_users, 1))
    ours = model.score(users, items, clip=True)
    theirs = np.array([[algo.predict(int(inter.user_ids[u]), int(inter.item_ids[i])).est
                        for i in range(inter.n_items)] for u in users])
    np.testing.assert_allclose(ours, theirs, atol=1e-5)  # float32 factors
    np.testing.assert_allclose(model.score_all(users), model.score(users, items), atol=1e-5)


def test_svd_on_the_array_trainset_equals_surprise_on_its_stock_trainset(small_dir):
    """The fast ``all_ratings`` feeds the SGD the same ratings in the same order: the same model."""
    from collections import defaultdict

    from surprise import SVD, Trainset

    inter = Interactions.from_ratings(load_dir(small_dir)[0])
    m = inter.matrix
    ur = defaultdict(list, {u: [(int(i), float(r)) for i, r in zip(m.indices[m.indptr[u]:m.indptr[u + 1]],
                                                                    m.data[m.indptr[u]:m.indptr[u + 1]],
                                                                    strict=True)]
                            for u in range(m.shape[0])})
    ir = defaultdict(list)
    for u, pairs in ur.items():
        for i, r in pairs:
            ir[i].append((u, r))
    stock = Trainset(ur, ir, m.shape[0], m.shape[1], m.nnz, (1.0, 5.0), {}, {})
    theirs = SVD(n_factors=6, n_epochs=4, lr_all=0.01, reg_all=0.05, random_state=3).fit(stock)
    ours, algo = train_svd(m, inter.user_ids, inter.item_ids, factors=6, epochs=4, lr=0.01, reg=0.05, seed=3)
    assert list(algo.trainset.all_ratings()) == list(stock.all_ratings())
    assert algo.trainset.global_mean == stock.global_mean == ours.mu
    for name in ("bu", "bi", "pu", "qi"):
        np.testing.assert_array_equal(getattr(algo, name), getattr(theirs, name), err_msg=name)
    assert algo.predict(int(inter.user_ids[1]), int(inter.item_ids[2])).details["was_impossible"] is False


def test_popularity_rules():
    import scipy.sparse as sp

    # item 0: 3 ratings of 5; item 1: 1 rating of 5; item 2: 3 ratings of 3
    m = sp.csr_matrix(np.array([[5, 5, 3], [5, 0, 3], [5, 0, 3]], dtype=np.float32))
    def popularity_scores(m, rule, min_count=100, damping=100.0):
        return scores(m, rule=rule, min_count=min_count, damping=damping, recency_days=0.0, window_days=0.0,
                      like_threshold=4.0, times=None)

    mean = popularity_scores(m, "mean", min_count=2)
    assert np.isneginf(mean[1]) and mean[0] == 5 and mean[2] == 3
    assert top_popular(mean, 10)[0].tolist() == [0, 2]
    damped = popularity_scores(m, "damped", damping=1.0)
    assert damped[0] > damped[1] > damped[2]
    assert popularity_scores(m, "count").tolist() == [3, 1, 3]
    assert top_popular(popularity_scores(m, "count"), 2)[0].tolist() == [0, 2]  # ties: lower index


def test_pipeline_lists_are_unseen_distinct_and_sorted(data):
    inter, movies, withheld = data
    params = Params(als_factors=4, als_iterations=15, svd_factors=4, top_n=6, candidates=8,
                    content_candidates=4)
    models = pipeline.Models.fit(inter, movies, params)
    recs = pipeline.recommend(models, inter, params)
    assert recs.items.shape == (inter.n_users, 6)
    for u in range(inter.n_users):
        row = recs.items[u][recs.items[u] >= 0]
        assert len(row) == len(set(row)) > 0
        assert not set(row) & set(inter.matrix[u].indices)
        assert (np.diff(recs.scores[u][: len(row)]) <= 1e-9).all()
    cands = pipeline.candidates(models, inter, np.arange(inter.n_users), params)
    assert cands.shape[1] == 12  # union of 8 ALS + 4 content, padded
    withheld_idx = inter.item_index(np.array([withheld[int(uid)] for uid in inter.user_ids]))
    assert all(withheld_idx[u] in cands[u] for u in range(inter.n_users))


def test_blend_ranker_changes_only_the_order(data):
    inter, movies, _ = data
    base = Params(als_factors=4, svd_factors=4, top_n=12, candidates=12, content_candidates=0)
    models = pipeline.Models.fit(inter, movies, base)
    svd = pipeline.recommend(models, inter, base)
    blend = pipeline.recommend(models, inter, base.with_(ranker="blend", blend_als=5.0, blend_pop=0.5))
    for u in range(inter.n_users):
        assert set(svd.items[u]) == set(blend.items[u])  # same candidates, all kept (top_n = 12)
    assert (svd.items != blend.items).any()  # ...in a different order


def test_chunks_on_every_core_equal_one_chunk_and_raise_errors():
    import scipy.sparse as sp

    from batch.models.topn import chunk_rows, chunked_top_n, for_each_chunk

    rng = np.random.default_rng(0)
    scores = rng.random((300, 40)).astype(np.float32)
    seen = sp.random(300, 40, density=0.2, format="csr", random_state=1)
    users = np.arange(300)
    whole = chunked_top_n(lambda b: scores[b], users, seen, 5, chunk=300)
    chunked = chunked_top_n(lambda b: scores[b], users, seen, 5, chunk=7)
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_array_equal(whole[1], chunked[1])

    def fail(sl):
        if sl.start >= 14:
            raise ValueError(f"chunk at {sl.start}")

    with pytest.raises(ValueError, match="chunk at"):
        for_each_chunk(fail, 300, 7)
    assert chunk_rows(3706) == 1024 and chunk_rows(59_000) == 71 and chunk_rows(10**9) == 64


def test_artifacts_round_trip_every_model_of_the_bundle(data, tmp_path):
    """The sharded steps rebuild the same bundle Models.fit made (EASE and the item features included)."""
    from batch import artifacts

    inter, movies, _ = data
    params = SMALL.with_(ranker="blend", blend_form="z", blend_ease=1.0, blend_als=1.0, blend_fresh=0.2,
                         blend_year=0.1, ease_candidates=5, candidates=6, content_candidates=3, top_n=6)
    models = pipeline.Models.fit(inter, movies, params)
    assert models.ease is not None and models.items is not None
    artifacts.save(tmp_path, inter, models, ["{}"] * inter.n_items, {"params": params.to_dict()})
    data2, loaded, _, manifest, params2 = artifacts.load(tmp_path)
    assert params2 == params and set(manifest["models"]) == {"als", "content", "svd", "popularity", "ease",
                                                             "items"}
    a, b = pipeline.recommend(models, inter, params), pipeline.recommend(loaded, data2, params2)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
