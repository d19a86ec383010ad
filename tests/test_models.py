"""Model contracts on small data with known answers (checkerboard: the withheld item returns)."""

from __future__ import annotations

import numpy as np
import pytest

from batch import pipeline
from batch.interactions import Interactions
from batch.models.als import confidence, train_als
from batch.models.content import train_content
from batch.models.popularity import item_stats, popularity_scores, top_popular
from batch.models.svd import train_svd
from batch.movielens_ratings import load_dir
from batch.params import Params


@pytest.fixture
def data(board):
    directory, withheld = board
    ratings, movies = load_dir(directory)
    return Interactions.from_ratings(ratings), movies, withheld


def _sources(data):
    """Every candidate source as ``recommend(users, n) -> (ids, scores)`` (the contract mixin)."""
    inter, movies, _ = data
    counts, _ = item_stats(inter.matrix)
    als = train_als(inter.matrix, factors=2, iterations=15, regularization=0.01)  # the true rank
    content = train_content(pipeline.item_genres(inter, movies), counts)
    liked = inter.liked()
    return {
        "als": lambda users, n: als.recommend(users, inter.matrix, n),
        "content": lambda users, n: content.recommend(liked, inter.matrix, users, n, chunk=7),
    }


@pytest.mark.parametrize("name", ["als", "content"])
def test_candidate_source_contract(data, name):
    inter, _, withheld = data
    source = _sources(data)[name]
    users = np.arange(inter.n_users)
    ids, scores = source(users, 5)
    assert ids.shape == (inter.n_users, 5) and scores.shape == ids.shape
    # never a seen item
    for u in users:
        seen = set(inter.matrix[u].indices)
        assert not seen & set(ids[u][ids[u] >= 0])
    # sorted best first, no duplicates
    finite = np.where(np.isfinite(scores), scores, -1e9)
    assert (np.diff(finite, axis=1) <= 1e-6).all()
    for row in ids:
        valid = row[row >= 0]
        assert len(valid) == len(set(valid))
    # batched equals one by one
    for u in (0, 3, inter.n_users - 1):
        one_ids, one_scores = source(np.array([u]), 5)
        np.testing.assert_array_equal(one_ids[0], ids[u])
        np.testing.assert_allclose(one_scores[0], scores[u], rtol=1e-5)
    # the withheld movie of each user's own taste group comes back first
    withheld_idx = inter.item_index(np.array([withheld[int(uid)] for uid in inter.user_ids]))
    if name == "als":
        assert (ids[:, 0] == withheld_idx).mean() == 1.0
    else:
        assert all(withheld_idx[u] in ids[u] for u in users)


def test_asking_for_more_than_the_catalogue_pads_with_minus_one(data):
    inter = data[0]
    ids, scores = _sources(data)["als"](np.arange(3), inter.n_items + 10)
    assert ids.shape[1] == inter.n_items
    assert ((ids == -1) == ~np.isfinite(scores)).all() and (ids == -1).any()


def test_svd_vectorised_scores_equal_surprise_predict(data):
    inter = data[0]
    model, algo = train_svd(inter.matrix, inter.user_ids, inter.item_ids, factors=5, epochs=5)
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


def test_confidence_weightings():
    import scipy.sparse as sp

    m = sp.csr_matrix(np.array([[5, 0, 2], [0, 4, 0]], dtype=np.float32))
    assert confidence(m, "raw", 2.0).data.tolist() == [10, 4, 8]
    assert confidence(m, "binary", 3.0).data.tolist() == [3, 3, 3]
    assert confidence(m, "liked").data.tolist() == [2, 1, 2]
    assert confidence(m, "bm25").nnz == 3 and (confidence(m, "bm25").data >= 0).all()
    with pytest.raises(ValueError, match="unknown weighting"):
        confidence(m, "nope")


def test_popularity_rules():
    import scipy.sparse as sp

    # item 0: 3 ratings of 5; item 1: 1 rating of 5; item 2: 3 ratings of 3
    m = sp.csr_matrix(np.array([[5, 5, 3], [5, 0, 3], [5, 0, 3]], dtype=np.float32))
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
    models = pipeline.train(inter, movies, params)
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
    models = pipeline.train(inter, movies, base)
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
