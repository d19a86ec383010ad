"""``GET /popular?genre=G``: the popular rule within one genre, published with the run."""

from __future__ import annotations

import pytest

from batch.store import RunStore
from lookup_api import create_app
from lookup_api.contract.keys import Keys


@pytest.fixture
def api(redis_url, prefix, publish_small):
    run_id = publish_small()
    return create_app({"REDIS_URL": redis_url, "PREFIX": prefix, "TESTING": True}).test_client(), run_id


def test_every_genre_has_its_list_in_the_popular_order(api, client, prefix):
    http, run_id = api
    store = RunStore(client, Keys(prefix))
    meta = store.meta(run_id)
    genres = meta.genres
    assert genres == sorted({g for it in store.popular(run_id) for g in it["genres"]} | set(genres))
    popular = store.popular(run_id)
    for genre in genres:
        doc = http.get(f"/popular?genre={genre}&n={meta.top_n}").get_json()
        assert doc["source"] == "popular" and doc["genre"] == genre and doc["run_id"] == run_id
        got = [it["movie_id"] for it in doc["items"]]
        assert got and all(genre in it["genres"] for it in doc["items"])
        expected = [it["movie_id"] for it in popular if genre in it["genres"]]
        assert len(expected) >= len(got) or len(popular) == meta.stored_n
        shared = min(len(got), len(expected))
        assert got[:shared] == expected[:shared], genre  # the same rule, restricted to the genre
    assert http.get("/popular?genre=comedy").get_json()["genre"] == "Comedy"  # case-insensitive


def test_an_unknown_genre_is_a_400_listing_the_valid_ones(api):
    http, _ = api
    resp = http.get("/popular?genre=Western")
    assert resp.status_code == 400 and resp.is_json
    assert "Western" in resp.get_json()["error"] and "Comedy, Drama" in resp.get_json()["error"]
    assert http.get("/popular?genre=Drama&genre=Comedy").status_code == 400


def test_a_missing_genre_list_serves_the_popular_list_marked(api, client, prefix):
    http, run_id = api
    client.unlink(Keys(prefix).genre_popular(run_id, "Horror"))
    doc = http.get("/popular?genre=Horror&n=5").get_json()
    assert doc["reason"] == "missing" and doc["genre"] == "Horror"
    assert [it["movie_id"] for it in doc["items"]] == [
        it["movie_id"] for it in RunStore(client, Keys(prefix)).popular(run_id)[:5]]
