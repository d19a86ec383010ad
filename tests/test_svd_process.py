"""SVD fitted in a child process, side by side with ALS: the same models as a sequential fit."""

from __future__ import annotations

import time

import numpy as np
import pytest

from batch import pipeline
from batch.interactions import Interactions
from batch.models.svd import train_svd
from batch.models.svd_process import SVDProcess
from batch.movielens_ratings import load_dir
from batch.params import Params

PARAMS = Params(als_factors=8, svd_factors=8, svd_epochs=5, candidates=20, content_candidates=5, top_n=10,
                popularity_min_count=5)


@pytest.fixture
def data(small_dir):
    ratings, movies = load_dir(small_dir)
    return Interactions.from_ratings(ratings), movies


def test_child_fit_equals_in_process_fit(data):
    inter, _ = data
    kwargs = dict(factors=8, lr=0.01, reg=0.05, epochs=5, seed=7)
    expected, _ = train_svd(inter.matrix, inter.user_ids, inter.item_ids, **kwargs)
    with SVDProcess() as proc:
        assert proc.active
        proc.submit(inter.matrix, inter.user_ids, inter.item_ids, **kwargs)
        got = proc.result()
    assert proc.fit_seconds is not None and proc.fit_seconds > 0
    assert got.mu == expected.mu and got.rating_scale == expected.rating_scale
    for name in ("bu", "bi", "pu", "qi"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)


def test_side_by_side_training_equals_sequential(data):
    inter, movies = data
    sequential = pipeline.Models.fit(inter, movies, PARAMS)
    with SVDProcess() as proc:
        concurrent = pipeline.Models.fit(inter, movies, PARAMS, svd_process=proc)
    assert "train_svd_wait" in concurrent.timings and "train_svd_wait" not in sequential.timings
    for model, names in (("als", ("user_factors", "item_factors")), ("svd", ("bu", "bi", "pu", "qi"))):
        for name in names:
            np.testing.assert_array_equal(getattr(getattr(concurrent, model), name),
                                          getattr(getattr(sequential, model), name), err_msg=name)
    a = pipeline.recommend(concurrent, inter, PARAMS)
    b = pipeline.recommend(sequential, inter, PARAMS)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_child_errors_are_raised_in_the_parent(data):
    inter, _ = data
    with SVDProcess() as proc:
        proc.submit(inter.matrix, inter.user_ids, inter.item_ids, factors=8, epochs=1, no_such_arg=1)
        with pytest.raises(TypeError, match="no_such_arg"):
            proc.result()


def test_an_unused_child_goes_away(data):
    proc = SVDProcess()
    child = proc._proc
    assert child.is_alive()
    proc.close()  # e.g. the load failed: nothing was submitted
    assert not child.is_alive() and not proc.active


def test_als_widened_mid_fit_equals_a_fit_on_one_thread(data):
    """Switching the solver from one thread to every core between iterations changes nothing."""
    from batch.models.als import fit
    from batch.params import Params

    inter, _ = data
    polls = []

    def widen() -> bool:
        polls.append(len(polls))
        return len(polls) >= 3  # the SVD child "finishes" after the third iteration

    kwargs = Params(als_factors=8, als_iterations=6, als_regularization=0.1, seed=5).kwargs("als")
    narrow = fit(inter, **kwargs, threads=1)
    widened = fit(inter, **kwargs, threads=1, widen=widen)
    assert len(polls) == 3  # polled after each iteration until it said yes, then never again
    np.testing.assert_array_equal(widened.user_factors, narrow.user_factors)
    np.testing.assert_array_equal(widened.item_factors, narrow.item_factors)


def test_done_says_when_the_child_has_answered(data):
    inter, _ = data
    with SVDProcess() as proc:
        assert not proc.done()  # nothing submitted yet
        proc.submit(inter.matrix, inter.user_ids, inter.item_ids, factors=4, epochs=1, lr=0.005, reg=0.02,
                    seed=1)
        for _ in range(600):
            if proc.done():
                break
            time.sleep(0.05)
        assert proc.done()
        proc.result()
    assert proc.done()
