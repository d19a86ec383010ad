"""Hidden titles (``recsys-batch hide``): gone from every list within ~1 s, back on ``unhide``, and
published nowhere by the next run; against real Redis and the real API under gunicorn (2 workers)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from click.testing import CliRunner

from batch.cli import cli
from batch.store import RunStore
from lookup_api.contract.items import list_ids
from lookup_api.contract.keys import Keys
from lookup_api.service import Lookup
from tests.loadtest import gunicorn


def get(url: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"Connection": "close"})  # a new connection: either worker
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def ids(doc: dict) -> list[int]:
    return [item["movie_id"] for item in doc.get("items", [])]


def recsys(redis_url: str, prefix: str, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--redis-url", redis_url, "--prefix", prefix, *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_hide_reaches_every_worker_and_list_within_2s_and_the_next_run(publish_small, client, redis_url,
                                                                      prefix):
    run_id = publish_small()
    store = RunStore(client, Keys(prefix))
    top_n = store.meta(run_id).top_n
    user1 = ids({"items": store.served(1, top_n).items()})
    popular = ids({"items": store.served_popular(top_n).items()})
    movie = next(m for m in user1 if m in popular)
    source = next(m for m in popular
                  if m != movie and movie in list_ids(store.served_similar(m, top_n).items_json))
    urls = [f"/recommendations/1?n={top_n}", f"/popular?n={top_n}", f"/similar/{source}?n={top_n}"]
    env = {"REDIS_URL": redis_url, "RECSYS_PREFIX": prefix, "PROMETHEUS_MULTIPROC_DIR": ""}
    with gunicorn("lookup_api:create_app()", env, workers=2) as base:
        for _ in range(6):  # both workers cache the lists
            for url in urls:
                assert movie in ids(get(base + url)[1]), url
        assert recsys(redis_url, prefix, "hide", movie, "--reason", "licence expired")
        hidden_at = time.monotonic()
        seen_at = {}
        while time.monotonic() - hidden_at < 4:
            answers = [ids(get(base + url)[1]) for url in urls for _ in range(4)]
            if any(movie in a for a in answers):
                seen_at["last"] = time.monotonic() - hidden_at
            elif time.monotonic() - hidden_at > 2.5:
                break
        assert seen_at.get("last", 0) < 2.0, f"still served {seen_at['last']:.2f}s after hide"
        print(f"\nhidden movie {movie} last served {seen_at.get('last', 0):.2f}s after `hide`")
        for url in urls:  # still full lists: the spare items stand in
            status, doc = get(base + url)
            assert status == 200 and movie not in ids(doc) and len(ids(doc)) == top_n, url
        assert get(base + f"/similar/{movie}")[0] == 404  # no "more like this" page for a hidden title
        out = recsys(redis_url, prefix, "hidden")
        assert str(movie) in out and "licence expired" in out
        recsys(redis_url, prefix, "unhide", movie)
        time.sleep(1.3)
        for _ in range(4):
            for url in urls:
                assert movie in ids(get(base + url)[1]), url

    recsys(redis_url, prefix, "hide", movie)
    second = publish_small()
    assert store.meta(second).hidden_at_publish == 1
    keys = list(client.scan_iter(match=Keys(prefix).run_pattern(second) + "", count=1000))
    lists = [k for k in keys if not k.endswith((b":meta", b":users", b":catalog"))]
    assert len(lists) > 300
    carrying = [k for k in lists if movie in list_ids(client.get(k))]
    assert not carrying, f"run {second} publishes hidden movie {movie} in {carrying[:3]}"
    assert client.get(Keys(prefix).similar(second, movie)) is None
    recsys(redis_url, prefix, "unhide", movie)
    assert movie not in ids({"items": store.served_popular(top_n).items()})  # not in this run: back next run


def test_the_stale_answer_drops_hidden_titles_too(redis_process, publish_small, prefix):
    """With Redis gone, the last known lists are served stale, without the titles hidden meanwhile."""
    private = redis_process.client()
    run_id = publish_small(store_client=private)
    store = RunStore(private, Keys(prefix))
    lookup = Lookup(redis_process.client(), Keys(prefix), hidden_ttl=0.0, retry_after=0.0)
    popular = list_ids(lookup.popular(10).items_json)
    source = popular[1]
    similar = list_ids(lookup.similar(source, 10).items_json)
    movie = next(m for m in similar if m in popular)
    store.hide([movie], "legal request")
    assert movie not in list_ids(lookup.popular(10).items_json)  # read afresh (TTL 0)
    redis_process.stop()
    for result in (lookup.popular(10), lookup.similar(source, 10), lookup.recommendations(1, 10)):
        got = list_ids(result.items_json)
        assert result.stale and result.run_id == run_id and movie not in got and len(got) == 10
