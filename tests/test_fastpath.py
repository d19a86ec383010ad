"""The fast path (:mod:`lookup_api.fastpath`) answers what the Flask views answer, byte for byte.

Every request is sent to two apps over the same published run, one with the fast path and one
with ``FAST_PATH`` off (every request through Flask): status, headers and body must be equal,
and so must the request metrics.  The fast path must also really take the plain list requests
(no Flask request context for them) and leave everything else to Flask.
"""

from __future__ import annotations

import random
import re

import pytest
from flask import request_started

from batch.store import RunStore
from lookup_api import create_app
from lookup_api.contract.keys import Keys
from lookup_api.fastpath import FastPath


@pytest.fixture
def pair(redis_url, prefix, publish_small, client):
    run_id = publish_small()
    config = {"REDIS_URL": redis_url, "PREFIX": prefix, "TESTING": True}
    fast, flask = create_app(config), create_app({**config, "FAST_PATH": False})
    assert isinstance(fast.wsgi_app, FastPath) and not isinstance(flask.wsgi_app, FastPath)
    for app in (fast, flask):
        app.extensions["lookup"].hidden_ttl = 0.0  # re-read the hidden titles on every request
    return fast, flask, run_id


def requests(popular_ids: list[int], genres: list[str]) -> list[str]:
    """Plain and odd requests of every list route: valid, invalid, percent-encoded, repeated."""
    rng = random.Random(3)
    some = ",".join(map(str, popular_ids[:7]))
    out = []
    for uid in [1, 2, 5, 17, 299, 300, 301, 999_999, *rng.sample(range(1, 400), 20)]:
        out += [f"/recommendations/{uid}", f"/recommendations/{uid}?n={rng.randint(1, 20)}",
                f"/recommendations/{uid}?n=10&exclude={some}", f"/recommendations/{uid}?exclude={some}&n=3"]
    for movie in [*popular_ids[:10], 0, 1, 99_999_999]:
        out += [f"/similar/{movie}", f"/similar/{movie}?n=5&exclude={some}"]
    out += ["/popular", "/popular?n=50", f"/popular?exclude={some}"]
    out += [f"/popular?genre={g}&n=4" for g in genres] + ["/popular?genre=drama", "/popular?genre=Nope",
                                                          "/popular?genre=Sci-Fi&exclude=1,2"]
    out += [  # refused: 400s, 404s, and what only Flask parses
        "/recommendations/0", "/recommendations/x", "/recommendations/-1", "/recommendations/1.5",
        "/recommendations/99999999999", "/recommendations/5?n=0", "/recommendations/5?n=51",
        "/recommendations/5?n=x", "/recommendations/5?n=", "/recommendations/5?n=3&n=4",
        "/recommendations/5?exclude=1,,2", "/recommendations/5?exclude=" + ",".join(["7"] * 101),
        "/recommendations/5?exclude=1&exclude=2", "/recommendations/5?exclude=1%2C2",
        "/recommendations/5?n=%33", "/recommendations/5?n=3+", "/recommendations/5?x=%ff&n=2",
        "/recommendations/5?unknown=1&n=2", "/recommendations/5?&&n=2&", "/recommendations/5?n=2#frag",
        "/recommendations/", "/recommendations", "/recommendations/5/", "//recommendations/5",
        "/recommendations//5", "/recommendations/%35", "/recommendations/\u0665", "/similar/",
        "/similar/abc", "/similar/1/2", "/popular/", "/popular?genre=", "/popular?genre=a&genre=b",
        "/nope", "/healthz",
    ]
    return out


def answers(app, path: str, method: str = "GET") -> tuple:
    resp = app.test_client().open(path, method=method)
    return resp.status_code, sorted(resp.headers.items()), resp.get_data()


def test_every_request_is_answered_alike_with_and_without_the_fast_path(pair, client, prefix):
    fast, flask, run_id = pair
    http = flask.test_client()
    top_n = RunStore(client, Keys(prefix)).meta(run_id).top_n
    popular = [it["movie_id"] for it in http.get(f"/popular?n={top_n}").get_json()["items"]]
    genres = sorted(http.get("/popular?genre=Nope").get_json()["error"].split(": ")[-1].split(", "))
    assert len(genres) > 2
    client.hset(f"{prefix}:hidden", popular[1], "{}")  # a hidden title, dropped by both alike
    paths = requests(popular, genres)
    for path in paths:
        assert answers(fast, path) == answers(flask, path), path
    for method in ("HEAD", "OPTIONS", "POST", "DELETE"):
        for path in ("/recommendations/5?n=3", "/popular", "/similar/1"):
            assert answers(fast, path, method) == answers(flask, path, method), (method, path)
    statuses = {answers(fast, p)[0] for p in paths}
    assert {200, 400, 404} <= statuses  # the battery reaches each kind of answer


def test_the_fast_path_takes_plain_list_requests_and_leaves_the_rest_to_flask(pair):
    fast, _, _ = pair
    seen: list[str] = []

    def started(sender, **_):
        from flask import request

        seen.append(request.full_path.rstrip("?"))

    request_started.connect(started, fast)
    try:
        http = fast.test_client()
        plain = ["/recommendations/5?n=3", "/recommendations/999999", "/popular?genre=Drama&n=2",
                 "/popular?exclude=1,2,3", "/similar/1?n=2"]
        for path in plain:
            assert http.get(path).status_code == 200, path
        assert seen == []  # no Flask request context for any of them
        flask_only = ["/recommendations/5?n=0", "/recommendations/5?n=%33", "/similar/99999999",
                      "/healthz", "/recommendations/x"]
        for path in flask_only:
            http.get(path)
        assert seen == flask_only
    finally:
        request_started.disconnect(started, fast)


def test_the_fast_path_counts_in_the_metrics_as_flask_does(pair):
    fast, flask, _ = pair
    paths = ["/recommendations/5?n=3", "/recommendations/999999", "/popular?genre=Drama&n=2",
             "/similar/1?n=2", "/recommendations/5?n=0", "/similar/99999999", "/popular?exclude=1,2"]

    def counted(app) -> str:
        http = app.test_client()
        for path in paths:
            http.get(path)
        text = http.get("/metrics").get_data(as_text=True)
        lines = [line for line in text.splitlines()
                 if re.match(r"recsys_api_(requests_total|dropped_items_total|fallbacks_total)|"
                             r"recsys_api_request_duration_seconds_count", line)]
        return "\n".join(sorted(lines))

    got = counted(fast)
    assert got == counted(flask)
    assert 'route="/similar/<movie_id>",source="similar",status="200"} 1.0' in got


def test_a_request_handed_to_flask_is_timed_from_its_start_on_the_fast_path(pair):
    """An error raised after a slow Redis call on the fast path: the latency counts that call too."""
    import time

    from lookup_api.service import UnknownMovie

    fast, _, _ = pair
    lookup = fast.extensions["lookup"]

    def slow_unknown(movie_id, n, exclude):
        time.sleep(0.3)  # as a Redis call that took its time, then failed
        raise UnknownMovie(movie_id)

    lookup.similar = slow_unknown
    http = fast.test_client()
    assert http.get("/similar/1?n=2").status_code == 404
    text = http.get("/metrics").get_data(as_text=True)
    total = next(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith('recsys_api_request_duration_seconds_sum{route="/similar/<movie_id>"}'))
    assert total >= 0.3
