"""The split, the fold, EASE and the pipeline options the evaluation relies on."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from batch import pipeline
from batch.evaluation.protocol import ModelCache, fold_for, svd_errors
from batch.evaluation.split import EvaluationError, make_fold, split_ratings
from batch.movielens import Ratings
from batch.movielens_ratings import load_dir
from batch.params import ParamError, Params


@pytest.fixture
def small(small_dir):
    return load_dir(small_dir)


def test_split_sizes_disjoint_complete_and_stratified(small):
    ratings, _ = small
    split = split_ratings(ratings)
    parts = [split.train, split.validation, split.test]
    assert sum(map(len, parts)) == len(ratings)
    assert len(np.unique(np.concatenate(parts))) == len(ratings)  # no leakage, nothing lost
    assert [round(len(p) / len(ratings), 2) for p in parts] == [0.6, 0.2, 0.2]
    for part, share in zip(parts, (0.6, 0.2, 0.2), strict=True):  # every user in every part, pro rata
        per_user = np.bincount(ratings.user_ids[part]) / np.maximum(np.bincount(ratings.user_ids), 1)
        users = np.unique(ratings.user_ids)
        assert np.abs(per_user[users] - share).max() <= 0.05
        assert set(np.unique(ratings.user_ids[part])) == set(users)


def test_split_is_deterministic_and_matches_sklearn(small):
    ratings, _ = small
    a, b, c = split_ratings(ratings), split_ratings(ratings), split_ratings(ratings, seed=7)
    np.testing.assert_array_equal(a.test, b.test)
    np.testing.assert_array_equal(a.validation, b.validation)
    assert not np.array_equal(a.test, c.test)
    rest, test = train_test_split(np.arange(len(ratings)), test_size=0.2, stratify=ratings.user_ids,
                                  random_state=42)
    train, val = train_test_split(rest, test_size=0.25, stratify=ratings.user_ids[rest], random_state=42)
    np.testing.assert_array_equal(a.test, np.sort(test))
    np.testing.assert_array_equal(a.validation, np.sort(val))
    np.testing.assert_array_equal(a.train, np.sort(train))


def test_a_user_with_one_rating_cannot_be_stratified():
    one = np.array([1, 2, 2, 2, 2], dtype=np.int64)
    ratings = Ratings(one, np.arange(5), np.full(5, 4, dtype=np.float32), np.zeros(5, dtype=np.int64))
    with pytest.raises(EvaluationError, match="cannot split"):
        split_ratings(ratings)


def test_fold_holds_out_only_unfitted_pairs_and_counts_unreachable_movies():
    #  user 1 rated movies 10, 20 (fit) and 30 (held out, never fitted) and 20 again is impossible
    ratings = Ratings(np.array([1, 1, 1, 2, 2, 2]), np.array([10, 20, 30, 10, 20, 40]),
                      np.array([5, 4, 5, 2, 3, 4], dtype=np.float32), np.zeros(6, dtype=np.int64))
    fold = make_fold(ratings, np.array([0, 1, 3, 4]), np.array([2, 5]))
    assert fold.data.n_items == 2 and fold.heldout.nnz == 0  # 30 and 40 were never fitted
    assert fold.n_relevant.tolist() == [1, 1] and fold.users().tolist() == [0, 1]
    assert fold.cold_ratings.tolist() == [5, 4]
    with pytest.raises(EvaluationError, match="nothing to evaluate"):
        make_fold(ratings, np.array([0, 1, 2, 5]), np.array([3, 4]))  # held out: 2 and 3 stars


def test_validation_and_test_folds_fit_on_the_right_parts(small):
    ratings, _ = small
    split = split_ratings(ratings)
    val, test = fold_for(ratings, split, "validation"), fold_for(ratings, split, "test")
    assert val.data.nnz == len(split.train)
    assert test.data.nnz == len(split.train) + len(split.validation)
    for fold in (val, test):  # no held-out (user, movie) pair is in the fitted matrix
        assert fold.data.matrix.multiply(fold.heldout).nnz == 0
    with pytest.raises(ValueError, match="unknown phase"):
        fold_for(ratings, split, "train")


def test_z_blend_sums_standardised_terms_and_ease_joins_the_candidates(small):
    ratings, movies = small
    fold = fold_for(ratings, split_ratings(ratings), "validation")
    params = Params(als_factors=8, svd_factors=8, svd_epochs=5, candidates=20, content_candidates=5,
                    ease_candidates=10, ease_weighting="likes", ranker="blend", blend_form="z", blend_als=0.5,
                    blend_svd=0.2, blend_ease=1.0, blend_pop=0.1, popularity_rule="liked")
    models = ModelCache(fold, movies).models(params)
    assert models.ease is not None and ModelCache(fold, movies).models(Params()).ease is None
    users = np.arange(fold.data.n_users)
    cands = pipeline.candidates(models, fold.data, users, params)
    ease_ids = models.ease.recommend(users, fold.data.matrix, 10)[0]
    assert all(set(ease_ids[u][ease_ids[u] >= 0]) <= set(cands[u]) for u in users)
    valid = cands >= 0

    def z(values):
        values = np.where(valid, values, np.nan)
        mean, std = np.nanmean(values, axis=1, keepdims=True), np.nanstd(values, axis=1, keepdims=True)
        return np.where(std > 0, (values - mean) / np.where(std > 0, std, 1), 0.0)  # a constant term: 0

    pop = np.log1p(models.popularity.scores[np.maximum(cands, 0)])
    expected = (0.2 * z(models.svd.score(users, cands)) + 0.5 * z(models.als.score(users, cands))
                + z(models.ease.score(users, cands)) + 0.1 * z(pop))
    got = pipeline.score_candidates(models, users, cands, params)
    np.testing.assert_allclose(got[valid], expected[valid], rtol=1e-4, atol=1e-4)
    assert np.isneginf(got[~valid]).all()


def test_one_scoring_function_for_lists_and_served_lists():
    import scipy.sparse as sp

    from batch.evaluation.metrics import ranking_curves
    from batch.evaluation.scoring import Truth, paired_difference, score, served

    relevant = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]], dtype=np.float32))
    truth = Truth(relevant, np.array([2, 3, 2]), 4)
    recs = np.array([[0, 2], [2, -1], [3, 1]])
    result = score(recs, truth, k=12)
    padded = np.pad(recs, ((0, 0), (0, 10)), constant_values=-1)
    curves = ranking_curves(padded, relevant, truth.n_relevant, 4)
    for name, values in curves.items():
        np.testing.assert_allclose(result.curves[name], values, atol=1e-6)
    assert result.at_10()["precision@10"] == round((1 + 1 + 1) / 30, 5)
    np.testing.assert_allclose(result.per_user["precision@10"], [0.1, 0.1, 0.1])
    nothing = score(served(np.array([1]), 3, 10), truth)
    np.testing.assert_allclose(nothing.per_user["precision@10"], [0.1, 0, 0])
    diff = paired_difference(result, nothing)["precision@10"]
    assert diff["difference"] == round(0.2 / 3, 5)
    assert diff["standard_error"] == round(float(np.std([0, 0.1, 0.1], ddof=1) / np.sqrt(3)), 5)
    with pytest.raises(ValueError, match="2 lists for 3 users"):
        score(recs[:2], truth)


def test_product_blend_ranks_by_both_signals_and_candidates_can_keep_seen(small):
    ratings, movies = small
    fold = fold_for(ratings, split_ratings(ratings), "validation")
    params = Params(als_factors=8, svd_factors=8, svd_epochs=5, candidates=20, content_candidates=5,
                    ranker="blend", blend_form="product", blend_als=1.0, blend_svd=1.0)
    models = ModelCache(fold, movies).models(params)
    users = np.arange(fold.data.n_users)
    cands = pipeline.candidates(models, fold.data, users, params)
    score = pipeline.score_candidates(models, users, cands, params)
    als = np.log(np.maximum(models.als.score(users, cands), pipeline.ALS_FLOOR))
    svd = -np.logaddexp(0, -(models.svd.score(users, cands) - 3.5))
    valid = cands >= 0
    np.testing.assert_allclose(score[valid], (als + svd)[valid], rtol=1e-5)
    assert np.isneginf(score[~valid]).all()
    keep = pipeline.candidates(models, fold.data, users, params, exclude_seen=False)
    seen = [set(fold.data.matrix[u].indices) for u in users]
    assert any(set(keep[u]) & seen[u] for u in users)
    assert not any(set(cands[u]) & seen[u] for u in users)
    assert svd_errors(fold, models.svd)["rmse"] < 1.5
    with pytest.raises(ParamError, match="blend_form"):
        Params(blend_form="sum")
