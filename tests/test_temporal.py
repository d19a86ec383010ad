"""The temporal protocol on generated data with known timestamps: the cut, warm and cold users,
the recency-weighted popular list, and the fallback scored for cold users = the list the batch publishes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from batch.evaluation.evaluate import evaluate
from batch.evaluation.protocol import phase_parts
from batch.evaluation.scoring import score, served
from batch.evaluation.split import EvaluationError
from batch.evaluation.temporal import cold_users, split_by_time
from batch.interactions import Interactions
from batch.models.popularity import popularity_scores as scores
from batch.models.popularity import recency_weights
from batch.movielens import Ratings
from batch.movielens_ratings import load_dir
from batch.params import Params
from lookup_api.contract.items import decode_items
from tests.synth import timed_dataset, write_dataset

SMALL = Params(als_factors=8, svd_factors=8, svd_epochs=5, candidates=30, content_candidates=10,
               ranker="blend", blend_form="product", blend_als=1.0, blend_pop=0.1, top_n=20,
               popularity_rule="liked", popularity_recency_days=30.0)


@pytest.fixture(scope="module")
def timed():
    rows, movies, join = timed_dataset()
    arr = np.array(rows, dtype=np.int64)
    return rows, movies, join, arr


@pytest.fixture
def timed_dir(tmp_path, timed):
    rows, movies, _, _ = timed
    return write_dataset(tmp_path / "timed", rows, movies)


def test_the_cut_puts_every_rating_on_the_right_side_and_keeps_ties_together(timed_dir, timed):
    _, _, _, arr = timed
    ratings, _ = load_dir(timed_dir)
    split = split_by_time(ratings)
    t = arr[:, 3]
    ordered = np.sort(t)
    assert split.validation_cut == ordered[int(np.ceil(0.8 * len(t)))]
    assert split.test_cut == ordered[int(np.ceil(0.9 * len(t)))]
    np.testing.assert_array_equal(split.train, np.flatnonzero(t < split.validation_cut))
    np.testing.assert_array_equal(split.validation,
                                  np.flatnonzero((t >= split.validation_cut) & (t < split.test_cut)))
    np.testing.assert_array_equal(split.test, np.flatnonzero(t >= split.test_cut))
    assert len(np.unique(t)) < len(t) / 10  # day resolution: the cuts fall inside runs of equal stamps
    assert (t == split.validation_cut).sum() > 1 and (t == split.test_cut).sum() > 1
    # ties go to the later side: train is at most 80%, test at least 10%
    assert 0.78 < len(split.train) / len(t) <= 0.8 and 0.1 <= len(split.test) / len(t) < 0.12


@pytest.mark.parametrize("phase", ["validation", "test"])
def test_cold_users_are_exactly_those_without_a_rating_before_the_cut(timed_dir, timed, phase):
    _, _, join, arr = timed
    ratings, _ = load_dir(timed_dir)
    split = split_by_time(ratings)
    fit, held = phase_parts(split, phase)
    cut = split.validation_cut if phase == "validation" else split.test_cut
    data = Interactions.from_ratings(ratings.take(fit))
    cold = cold_users(data, ratings.take(held))
    t, users, stars = arr[:, 3], arr[:, 0], arr[:, 2]
    upper = split.test_cut if phase == "validation" else np.inf
    first = {u: t[users == u].min() for u in join}
    held_out_liked = {int(u) for u in users[(t >= cut) & (t < upper) & (stars >= 4)]}
    expected = sorted(u for u in held_out_liked if first[u] >= cut)
    assert cold.user_ids.tolist() == expected and len(expected) >= 5
    warm = {u for u in held_out_liked if first[u] < cut}
    assert warm and not warm & set(expected)
    for row, user in enumerate(cold.user_ids):  # each cold user's relevant movies, as movie ids
        mine = (users == user) & (t >= cut) & (t < upper) & (stars >= 4)
        assert cold.n_relevant[row] == mine.sum()
        shown = data.item_ids[cold.relevant[row].indices]
        assert set(shown) == set(arr[mine, 1]) & set(data.item_ids)


def test_interactions_keep_timestamps_aligned_with_the_matrix():
    ratings = Ratings(np.array([2, 1, 2, 1]), np.array([30, 20, 10, 10]), np.array([1, 2, 3, 4], np.float32),
                      np.array([100, 200, 300, 400]))
    data = Interactions.from_ratings(ratings)
    # CSR order: (user 1: movie 10, 20), (user 2: movie 10, 30)
    assert data.matrix.data.tolist() == [4, 2, 3, 1] and data.times.tolist() == [400, 200, 300, 100]


def popularity_scores(m, rule, times=None, recency_days=0.0, window_days=0.0):
    return scores(m, rule=rule, min_count=100, damping=100.0, recency_days=recency_days,
                  window_days=window_days, like_threshold=4.0, times=times)


def test_recency_weighted_popularity():
    m = sp.csr_matrix(np.array([[5, 4, 0], [4, 0, 5], [0, 4, 2]], dtype=np.float32))
    day = 86400
    # m.data order: (0,0) (0,1) (1,0) (1,2) (2,1) (2,2)
    times = np.array([0, 10, 0, 10, 10, 10]) * day
    np.testing.assert_allclose(recency_weights(times, 10.0), [0.5, 1, 0.5, 1, 1, 1])
    assert popularity_scores(m, "liked").tolist() == [2, 2, 1]
    np.testing.assert_allclose(popularity_scores(m, "liked", times=times, recency_days=10.0), [1, 2, 1])
    np.testing.assert_allclose(popularity_scores(m, "count", times=times, recency_days=10.0), [1, 2, 2])
    # a window keeps only the last days' ratings (here: the day-10 ones)
    np.testing.assert_allclose(popularity_scores(m, "liked", times=times, window_days=5.0), [0, 2, 1])
    np.testing.assert_allclose(popularity_scores(m, "count", times=times, window_days=5.0), [0, 2, 2])
    with pytest.raises(ValueError, match="timestamp"):
        popularity_scores(m, "liked", recency_days=10.0)
    with pytest.raises(ValueError, match="unknown popularity rule"):
        popularity_scores(m, "best")


def test_the_fallback_scored_for_cold_users_is_the_list_the_batch_publishes(
        timed_dir, tmp_path, client, prefix):
    from batch.job import run_job
    from batch.store import RunStore
    from lookup_api.contract.keys import Keys

    ratings, movies = load_dir(timed_dir)
    report = evaluate(ratings, movies, SMALL, "temporal", k=20)
    # The batch, run for real on exactly what the test phase fits on (ratings before the test cut).
    split = split_by_time(ratings)
    fitted = ratings.take(np.sort(phase_parts(split, "test")[0]))
    rows = [(int(u), int(m), int(r), int(t)) for u, m, r, t in zip(
        fitted.user_ids, fitted.movie_ids, fitted.ratings, fitted.timestamps, strict=True)]
    movie_rows = list(zip(movies.movie_ids.tolist(), movies.titles, movies.genres, strict=True))
    keys = Keys(prefix)
    directory = write_dataset(tmp_path / "fitted", rows, movie_rows)
    run_id = run_job(directory, SMALL, RunStore(client, keys)).run_id
    published = client.get(keys.popular(run_id))
    scored = report["published_fallback"]
    ids = np.array(scored["movie_ids"])
    items = decode_items(published)[:len(scored["movie_ids"])]  # the stored list has spare items after
    assert [item["movie_id"] for item in items] == scored["movie_ids"]
    # the same scores too (stored with 4 decimals; each item also carries SVD's predicted rating)
    assert [item["score"] for item in items] == pytest.approx(scored["scores"], abs=1e-4)
    # ...and the cold row's numbers are those of that very list.
    data = Interactions.from_ratings(fitted)
    cold = cold_users(data, ratings.take(split.test))
    curves = score(served(data.item_index(ids), len(cold), 20), cold.truth(), 20).curves
    row = next(r for r in report["rows"] if r["key"] == "fallback@cold")
    assert row["users"] == len(cold) > 0
    np.testing.assert_allclose(row["curves"]["precision"], curves["precision"], atol=1e-6)
    assert report["published_fallback"] != {} and SMALL.popularity_recency_days > 0


def test_rows_cover_warm_cold_and_all(timed_dir):
    ratings, movies = load_dir(timed_dir)
    report = evaluate(ratings, movies, SMALL, "temporal", k=20)
    users = report["protocol"]["users"]
    by_segment = {}
    for row in report["rows"]:
        by_segment.setdefault(row["segment"], []).append(row)
        assert row["users"] == users[row["segment"]]
    assert {r["key"] for r in by_segment["cold"]} == {"fallback@cold", "popularity@cold"}
    assert {"default", "als", "ease", "knn", "recent_pop", "popularity", "original"} <= \
        {r["key"] for r in by_segment["warm"]}
    rows = {r["key"]: r for r in report["rows"]}
    for key, cold_key in (("default", "fallback@cold"), ("original", "popularity@cold")):
        weighted = (users["warm"] * np.array(rows[key]["curves"]["precision"])
                    + users["cold"] * np.array(rows[cold_key]["curves"]["precision"])) / users["all"]
        np.testing.assert_allclose(rows[f"{key}@all"]["curves"]["precision"], weighted, atol=1e-5)
    fb = report["fallback"]
    assert fb["validation"][0]["rule"].startswith("mean rating") and "test" in fb
    assert fb["published"]["popularity_rule"] == "liked"
    paired = report["paired"]  # the default minus each tuned baseline, over the same warm users
    assert paired["users"] == users["warm"] and set(paired["default_minus"]) == {"als", "ease", "knn",
                                                                                 "recent_pop"}
    best = rows[paired["best_baseline"]]["curves"]
    diff = paired["default_minus"][paired["best_baseline"]]["precision@10"]["difference"]
    assert diff == pytest.approx(rows["default"]["curves"]["precision"][9] - best["precision"][9], abs=2e-5)


def test_a_split_with_an_empty_part_is_a_clean_error():
    one_time = Ratings(np.arange(10), np.arange(10), np.full(10, 4, np.float32), np.zeros(10, np.int64))
    with pytest.raises(EvaluationError, match="empty"):
        split_by_time(one_time)


def test_fallback_choice_takes_the_best_rule_and_guards_the_half_life(timed_dir):
    from batch.evaluation.fallback import BASE_RULES, HALF_LIVES, choose_fallback

    ratings, _ = load_dir(timed_dir)
    split = split_by_time(ratings)
    data = Interactions.from_ratings(ratings.take(split.train))
    chosen, trials, guard = choose_fallback(data, cold_users(data, ratings.take(split.validation)), SMALL)
    assert len(trials) == len(BASE_RULES) + len(HALF_LIVES)
    best = max(trials[: len(BASE_RULES)], key=lambda t: (t["precision@10"], t["ndcg@10"]))
    assert chosen["popularity_rule"] == best["changes"]["popularity_rule"]
    assert guard["adopted"] == (guard["gain_p@10"] > guard["standard_error"])
    assert (chosen["popularity_recency_days"] > 0) == guard["adopted"]
    assert Params().with_(**chosen).popularity_rule == chosen["popularity_rule"]  # a valid Params change
