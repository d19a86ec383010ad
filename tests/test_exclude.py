"""``?exclude=`` on every list route: still ``n`` items, none excluded; bad values are 400 JSON.
And ``recsys-batch show USER -n N --exclude ...`` prints what the API serves, by the same code."""

from __future__ import annotations

import random
import re

import pytest
from click.testing import CliRunner

from batch.cli import cli
from batch.store import RunStore
from lookup_api import create_app
from lookup_api.contract.keys import Keys


@pytest.fixture
def api(redis_url, prefix, publish_small):
    run_id = publish_small()
    app = create_app({"REDIS_URL": redis_url, "PREFIX": prefix, "TESTING": True})
    app.extensions["lookup"].hidden_ttl = 0.0  # re-read the hidden titles on every request
    return app.test_client(), run_id


def ids(doc: dict) -> list[int]:
    return [item["movie_id"] for item in doc["items"]]


def test_exclude_drops_ids_and_still_fills_n_on_every_route(api, client, prefix):
    http, run_id = api
    store = RunStore(client, Keys(prefix))
    top_n = store.meta(run_id).top_n
    for route in ("/recommendations/5", "/recommendations/999999", "/popular", "/popular?genre=Drama",
                  f"/similar/{ids(http.get('/popular').get_json())[0]}"):
        sep = "&" if "?" in route else "?"
        full = ids(http.get(f"{route}{sep}n={top_n}").get_json())
        assert len(full) == top_n, route
        drop = full[:: 2][:10]  # 10 of the ids it serves, the first among them
        doc = http.get(f"{route}{sep}n={top_n}&exclude={','.join(map(str, drop))}").get_json()
        got = ids(doc)
        assert len(got) == top_n and not set(got) & set(drop), route
        assert [m for m in full if m not in drop] == got[: top_n - len(drop)], route  # order kept


def test_exclude_can_empty_a_short_list_but_never_errors(api, client, prefix):
    http, run_id = api
    stored = [it["movie_id"] for it in RunStore(client, Keys(prefix)).popular(run_id)]
    doc = http.get("/popular?n=5&exclude=" + ",".join(map(str, stored[:100]))).get_json()
    assert not set(ids(doc)) & set(stored[:100])
    assert len(ids(doc)) == min(5, len(stored) - 100) if len(stored) > 100 else ids(doc) == []


@pytest.mark.parametrize("bad", ["x", "1,,2", "1,x", "-1", "0", "1.5", "1%2C", " 1", "3000000000",
                                 ",".join(["7"] * 101), "1" * 2000])
def test_bad_exclude_is_a_400_json(api, bad):
    http, _ = api
    for route in ("/recommendations/5", "/popular", "/similar/1"):
        resp = http.get(f"{route}?exclude={bad}")
        assert resp.status_code == 400 and resp.is_json, (route, bad)
        assert "exclude" in resp.get_json()["error"]


def test_exclude_given_twice_is_a_400(api):
    http, _ = api
    resp = http.get("/popular?exclude=1&exclude=2")
    assert resp.status_code == 400 and "2 times" in resp.get_json()["error"]


def test_show_prints_what_the_api_serves_for_100_random_users(api, client, prefix, redis_url):
    http, run_id = api
    store = RunStore(client, Keys(prefix))
    top_n = store.meta(run_id).top_n
    store.hide([ids(http.get("/popular").get_json())[0]], "test")  # a hidden title too, for both
    rng = random.Random(21)
    users = rng.sample(range(1, 400), 100)  # 300 are published: some unknown users too
    runner = CliRunner()
    for user in users:
        n = rng.randint(1, top_n)
        served = ids(http.get(f"/recommendations/{user}?n={top_n}").get_json())
        exclude = rng.sample(served, rng.randint(0, 10))
        query = f"?n={n}" + (f"&exclude={','.join(map(str, exclude))}" if exclude else "")
        doc = http.get(f"/recommendations/{user}{query}").get_json()
        args = ["--redis-url", redis_url, "--prefix", prefix, "show", str(user), "-n", str(n)]
        out = runner.invoke(cli, args + (["--exclude", ",".join(map(str, exclude))] if exclude else []))
        assert out.exit_code == 0, out.output
        shown = [int(m) for m in re.findall(r"\(movie (\d+),", out.output)]
        assert shown == ids(doc), (user, n, exclude)
        assert f"user {user}: {doc['source']} list from run {run_id}" in out.output


def test_show_refuses_a_bad_exclude(api, redis_url, prefix):
    out = CliRunner().invoke(cli, ["--redis-url", redis_url, "--prefix", prefix, "show", "3",
                                   "--exclude", "1,x"])
    assert out.exit_code == 2 and "exclude" in out.output


def test_metrics_count_the_new_routes_and_the_dropped_items(api, client, prefix):
    http, _ = api
    popular = ids(http.get("/popular?n=10").get_json())
    http.get(f"/popular?n=10&exclude={popular[0]},{popular[1]},999")  # 2 of the served ids: 2 dropped
    RunStore(client, Keys(prefix)).hide([popular[2]])
    http.get("/popular?n=10")  # 1 hidden dropped
    http.get(f"/similar/{popular[0]}")
    http.get("/popular?genre=Drama")
    text = http.get("/metrics").get_data(as_text=True)
    assert 'recsys_api_dropped_items_total{kind="excluded"} 2.0' in text
    assert 'recsys_api_dropped_items_total{kind="hidden"} 1.0' in text
    assert 'recsys_api_requests_total{route="/similar/<movie_id>",source="similar",status="200"} 1.0' in text
