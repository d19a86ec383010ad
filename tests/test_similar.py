""""More like this": batch/related.py's chunked item-item top-k, ``GET /similar/<movie_id>``, rollback."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from batch.lifecycle import rollback
from batch.related import similar_items, tfidf_genres
from batch.store import RunStore
from lookup_api import create_app
from lookup_api.contract.items import list_ids
from lookup_api.contract.keys import Keys


def brute(likes, factors, genres, weights, shrink):
    x = (likes > 0).astype(np.float64).toarray()
    counts = x.sum(axis=0)
    sim = weights["likes"] * (x.T @ x) / (np.sqrt(np.outer(counts, counts)) + shrink)
    f = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    sim += weights["factors"] * f @ f.T
    sim += weights["genres"] * (genres @ genres.T).toarray()
    np.fill_diagonal(sim, -np.inf)
    return sim


def test_chunked_top_k_matches_the_dense_computation():
    rng = np.random.default_rng(3)
    likes = sp.random(200, 57, density=0.1, random_state=4, format="csr")
    factors = rng.normal(size=(57, 6))
    genres = tfidf_genres([[g for g in ("A", "B", "C") if rng.random() < 0.5] or ["A"] for _ in range(57)])
    weights = {"likes": 1.0, "factors": 0.3, "genres": 0.2}
    items, scores = similar_items(57, 5, likes=likes, factors=factors, genres=genres, weights=weights,
                                  shrink=2.0, chunk=7)
    dense = brute(likes, factors, genres, weights, 2.0)
    for i in range(57):
        assert i not in items[i]
        kept = items[i][items[i] >= 0]
        np.testing.assert_allclose(scores[i][: len(kept)], dense[i, kept], rtol=1e-4, atol=1e-5)
        positive = np.sort(dense[i][dense[i] > 0])[::-1]
        np.testing.assert_allclose(scores[i][: len(kept)], positive[: len(kept)], rtol=1e-4, atol=1e-5)
        assert len(kept) == min(5, len(positive))  # only positive similarities, padded with -1


def test_memory_stays_per_chunk_not_items_squared():
    n, chunk = 12_000, 256
    factors = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    tracemalloc.start()
    items, _ = similar_items(n, 20, factors=factors, weights={"factors": 1.0}, chunk=chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert items.shape == (n, 20) and (items >= 0).all()
    assert peak < 0.1 * n * n * 4, f"peak {peak / 2**20:.0f} MiB; a dense {n}x{n}: {n * n * 4 / 2**20:.0f}"


@pytest.fixture
def api(redis_url, prefix, publish_small):
    run_id = publish_small()
    return create_app({"REDIS_URL": redis_url, "PREFIX": prefix, "TESTING": True}).test_client(), run_id


def test_every_movie_of_the_run_has_a_similar_list(api, client, prefix):
    http, run_id = api
    store = RunStore(client, Keys(prefix))
    meta = store.meta(run_id)
    movies = sorted({it["movie_id"] for u in range(1, 301) for it in (store.user_list(run_id, u) or [])})
    assert meta.similar_movies == 120 and len(movies) > 50
    for movie in movies:
        doc = http.get(f"/similar/{movie}?n=7").get_json()
        assert doc["source"] == "similar" and doc["movie_id"] == movie and doc["run_id"] == run_id
        got = [it["movie_id"] for it in doc["items"]]
        assert len(got) == 7 and movie not in got and len(set(got)) == 7
        assert list(doc["items"][0]) == ["movie_id", "title", "genres", "score", "predicted_rating"]
        scores = [it["score"] for it in doc["items"]]
        assert scores == sorted(scores, reverse=True)


def test_an_unknown_movie_is_a_404_json(api):
    http, _ = api
    resp = http.get("/similar/999999")
    assert resp.status_code == 404 and resp.is_json and "999999" in resp.get_json()["error"]
    assert http.get("/similar/x").status_code == 400 and http.get("/similar/0").status_code == 400


def test_rollback_restores_the_similar_and_genre_lists(publish_small, client, prefix, redis_url):
    store = RunStore(client, Keys(prefix))
    first = publish_small()
    before = {k: client.get(k) for k in client.scan_iter(match=Keys(prefix).run_pattern(first), count=1000)
              if b":similar:" in k or b":popular:" in k}
    second = publish_small(keep=2, als_factors=4)
    assert store.current() == second
    assert rollback(store) == first
    http = create_app({"REDIS_URL": redis_url, "PREFIX": prefix, "TESTING": True}).test_client()
    for key, raw in before.items():
        if b":similar:" in key:
            movie = int(key.rsplit(b":", 1)[1])
            doc = http.get(f"/similar/{movie}?n=20").get_json()
            assert doc["run_id"] == first
            assert [it["movie_id"] for it in doc["items"]] == list_ids(raw)[:20]
        elif b":popular:" in key:
            genre = key.rsplit(b":", 1)[1].decode()
            doc = http.get(f"/popular?genre={genre}&n=20").get_json()
            assert doc["run_id"] == first and [it["movie_id"] for it in doc["items"]] == list_ids(raw)[:20]
    client.unlink(Keys(prefix).genre_popular(second, "Drama"))  # a run without one of its genre lists
    with pytest.raises(Exception, match="genre lists"):
        rollback(store, second)


def test_the_evaluation_table_chooses_on_validation_and_reports_test(tmp_path):
    from batch.evaluation.similar import similar_rows, table
    from batch.movielens_ratings import load_dir
    from batch.params import Params
    from tests.conftest import SMALL_PARAMS
    from tests.synth import timed_dataset, write_dataset

    rows, movies, _ = timed_dataset()
    ratings, movies = load_dir(write_dataset(tmp_path / "timed", rows, movies))
    rows = similar_rows(ratings, movies, Params(**SMALL_PARAMS))
    chosen = [r for r in rows if r["kind"] == "chosen"]
    assert [r["phase"] for r in chosen] == ["validation", "test"] and chosen[0]["model"] == chosen[1]["model"]
    for phase in ("validation", "test"):
        names = {r["model"] for r in rows if r["phase"] == phase}
        assert {"popular list (baseline)", "genre-only TF-IDF (baseline)"} <= names
    best = max((r for r in rows if r["phase"] == "validation" and r["kind"] != "baseline"
                and "reference" not in r["model"]), key=lambda r: r["ndcg@10"])
    assert best["model"] == chosen[0]["model"]  # chosen on validation, never on test
    assert all(0 <= r["precision@10"] <= 1 and r["users"] > 0 for r in rows)
    assert table(rows).count("\n") == len(rows) + 1


@pytest.mark.realdata
@pytest.mark.slow
def test_a_real_ml1m_run_answers_similar_and_genre_for_every_movie_and_genre(real_data, redis_url, prefix,
                                                                              client):
    """Every movie of a real ML-1M run has a full "more like this" list; every genre a full list."""
    from batch.job import run_job
    from batch.params import Params

    run_id = run_job(real_data, Params(), RunStore(client, Keys(prefix))).run_id
    meta = RunStore(client, Keys(prefix)).meta(run_id)
    assert meta.similar_movies == meta.n_items == 3706 and len(meta.genres) == 18
    http = create_app({"REDIS_URL": redis_url, "PREFIX": prefix, "TESTING": True}).test_client()
    movies = sorted(int(k.rsplit(b":", 1)[1]) for k in client.scan_iter(
        match=Keys(prefix).similar(run_id, 0)[:-1] + "*", count=5000))
    assert len(movies) == 3706
    short = []
    for movie in movies:
        resp = http.get(f"/similar/{movie}?n=10")
        assert resp.status_code == 200, movie
        if len(resp.get_json()["items"]) < 10:
            short.append(movie)
    assert not short, f"{len(short)} movies have fewer than 10 similar movies, e.g. {short[:5]}"
    for genre in meta.genres:
        doc = http.get(f"/popular?genre={genre}&n=10").get_json()
        assert doc["genre"] == genre and doc["items"] and all(genre in it["genres"] for it in doc["items"])
