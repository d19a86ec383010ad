"""The API under the faults a cluster delivers: missing keys, a missing ``current``, a hung Redis.

Keys deleted by hand stand in for evicted ones (tests/test_faults.py evicts them for real); the
hung Redis is a 5 s ``CLIENT PAUSE`` of a private redis-server under load, with the API under
gunicorn as deployed.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request

import pytest

from batch.job import run_job
from batch.params import Params
from batch.store import RunStore
from lookup_api import create_app
from lookup_api.contract.keys import Keys
from tests.conftest import SMALL_PARAMS, RedisProcess
from tests.loadtest import gunicorn


@pytest.fixture
def live(publish_small, redis_url, prefix, client):
    """A published run and an app on it that reads Redis on every lookup: (http, store, run id)."""
    run_id = publish_small()
    app = create_app({"REDIS_URL": redis_url, "PREFIX": prefix, "TESTING": True, "POINTER_TTL": 0.0,
                      "LIST_CACHE_SIZE": 0})
    return app.test_client(), RunStore(client, Keys(prefix)), run_id


def fallbacks(http) -> dict[str, float]:
    text = http.get("/metrics").get_data(as_text=True)
    found = re.findall(r'recsys_api_fallbacks_total\{reason="([^"]+)"\} (\S+)', text)
    return {reason: float(value) for reason, value in found}


def test_a_missing_list_gets_the_popular_list_marked_and_counted(live):
    http, store, run_id = live
    assert http.get("/recommendations/5").get_json()["source"] == "personalized"
    store.client.unlink(store.keys.user(run_id, 5))  # evicted
    resp = http.get("/recommendations/5?n=3")
    doc = resp.get_json()
    assert resp.status_code == 200 and doc["source"] == "popular" and doc["reason"] == "missing"
    assert doc["run_id"] == run_id and doc["items"] == store.popular_list(run_id)[:3]
    assert "stale" not in doc and fallbacks(http)["missing"] == 1
    assert http.get("/recommendations/6").get_json()["source"] == "personalized"  # the others are fine


def test_an_empty_list_is_never_served(live):
    http, store, run_id = live
    store.client.set(store.keys.user(run_id, 7), b"[]")
    doc = http.get("/recommendations/7").get_json()
    assert doc["source"] == "popular" and doc["reason"] == "empty" and len(doc["items"]) == 10
    assert fallbacks(http)["empty"] == 1


def test_a_missing_current_serves_the_run_seen_last_marked_stale(live):
    http, store, run_id = live
    assert http.get("/recommendations/8").status_code == 200
    store.client.unlink(store.keys.current)  # evicted
    for path, source in (("/recommendations/8", "personalized"), ("/recommendations/999999", "popular"),
                         ("/popular", "popular")):
        resp = http.get(path)
        doc = resp.get_json()
        assert resp.status_code == 200, (path, doc)
        assert doc["source"] == source and doc["stale"] is True and doc["reason"] == "no-current"
        assert doc["run_id"] == run_id
    ready = http.get("/readyz")
    assert ready.status_code == 503 and "missing" in ready.get_json()["reason"]
    assert fallbacks(http)["no-current"] == 3


def test_a_missing_popular_list_falls_back_to_the_one_seen_last(live, publish_small, prefix, redis_url):
    http, store, run_id = live
    assert http.get("/popular").status_code == 200  # this app has seen run_id's popular list
    second = publish_small()
    store.client.unlink(store.keys.popular(second))
    doc = http.get("/recommendations/999999").get_json()
    assert doc["stale"] is True and doc["run_id"] == run_id and doc["reason"] == "missing"
    assert http.get("/recommendations/9").get_json()["run_id"] == second  # personal lists still served


def test_deleting_the_previous_live_run_as_broken_is_logged_and_counted(publish_small, client, prefix,
                                                                        caplog):
    from batch import telemetry
    from batch.job import JobResult
    from batch.lifecycle import PublishReport

    first = publish_small()
    client.unlink(Keys(prefix).popular(first))  # evicted from the live run
    caplog.set_level(logging.INFO)
    second = publish_small()
    store = RunStore(client, Keys(prefix))
    assert store.current() == second and first not in dict(store.runs())
    said = [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and first in r.getMessage()]
    assert said == [f"deleting run {first} as broken (popular list missing); it was the live run until "
                    "this flip"]
    result = JobResult(second, 300, 120, 7500, published=PublishReport(second, 300, 0.1, [first], (first,)))
    registry = telemetry.success_registry(result, time.time())
    assert registry.get_sample_value("recsys_batch_broken_runs_deleted") == 1


def test_small_http_fixes(live):
    http, _, _ = live
    twice = http.get("/recommendations/3?n=1&n=2")
    assert twice.status_code == 400 and "given 2 times" in twice.get_json()["error"]
    options = http.options("/popular")
    assert options.status_code == 204 and options.get_data() == b"" and "GET" in options.headers["Allow"]
    assert "Content-Type" not in options.headers
    for path in ("//recommendations/3", "//popular"):  # as gunicorn passes them on: PATH_INFO untouched
        doubled = http.get("/", environ_overrides={"PATH_INFO": path})
        assert doubled.status_code == 404 and doubled.is_json, path
    from lookup_api.contract.connection import redact_url

    assert redact_url("redis://:p@ss@w0rd@cache:6379/0") == "redis://:***@cache:6379/0"


def test_breaker_lets_one_probe_through_and_backs_off():
    import redis

    from lookup_api.service import Breaker

    breaker = Breaker(window=0.2, cap=0.4)
    assert breaker.allow()
    breaker.failure(redis.TimeoutError())
    assert not breaker.allow()  # open: no Redis call
    time.sleep(0.25)
    assert breaker.allow() and not breaker.allow()  # half open: one probe, the others stay off
    breaker.failure(redis.TimeoutError())  # the probe failed: open for twice as long
    time.sleep(0.25)
    assert not breaker.allow()
    time.sleep(0.2)
    assert breaker.allow()
    breaker.success()
    assert breaker.allow() and breaker.allow()  # closed
    breaker.failure(redis.ConnectionError())  # refused: fails fast, no need to open
    assert breaker.allow()


# ------------------------------------------------------------------------------- a hung Redis
TIMEOUT = 1.0  # RECSYS_REDIS_SOCKET_TIMEOUT


def test_a_paused_redis_costs_a_request_at_most_one_timeout_under_load(tmp_path, small_dir):
    """5 s of CLIENT PAUSE ALL on a private server, 8 clients on gunicorn (2 workers, the README's config)."""
    server = RedisProcess(tmp_path)
    server.start()
    try:
        run_job(small_dir, Params(**SMALL_PARAMS), RunStore(server.client(), Keys()))
        env = {"REDIS_URL": server.url, "RECSYS_REDIS_SOCKET_TIMEOUT": str(TIMEOUT),
               "RECSYS_POINTER_TTL": "0", "RECSYS_LIST_CACHE_SIZE": "0",  # every lookup reads Redis
               "RECSYS_ACCESS_LOG": ""}
        with gunicorn("lookup_api:create_app()", env, workers=2) as url:  # recsys-api, as shipped
            done, stop = [], threading.Event()

            def client(seed: int) -> None:
                uid = seed
                while not stop.is_set():
                    uid = uid * 7 % 397 + 1  # 300 known users and some unknown ones
                    started = time.monotonic()
                    try:
                        with urllib.request.urlopen(f"{url}/recommendations/{uid}", timeout=30) as r:
                            status, doc = r.status, json.loads(r.read())
                    except urllib.error.HTTPError as e:
                        status, doc = e.code, {}
                    except OSError as e:  # no answer at all (timed out, reset): counted, not lost
                        status, doc = type(e).__name__, {}
                    done.append((started, time.monotonic() - started, status, doc.get("stale", False)))

            threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            time.sleep(1.5)
            paused = time.monotonic()
            server.client().client_pause(5000, all=True)
            time.sleep(5.0 + 3.0)
            stop.set()
            for t in threads:
                t.join(60)
    finally:
        server.stop()
    during = [d for d in done if paused <= d[0] < paused + 5.0]
    slowest = max(d[1] for d in done)
    ends = [d[0] + d[1] - paused for d in done]
    windows = [sum(1 for end in ends if w / 2 <= end < (w + 1) / 2) for w in range(10)]
    print(f"\n{len(done)} requests, {len(during)} started during the pause; slowest {slowest:.3f}s; "
          f"completions per 0.5 s of the pause: {windows}")
    assert {d[2] for d in done} == {200}, "no 5xx: stale answers while Redis hangs"
    assert any(d[3] for d in during), "the pause did not reach the API"
    assert slowest <= 1.2 * TIMEOUT, f"a request took {slowest:.2f}s with a {TIMEOUT}s timeout"
    assert not any(d[3] for d in done if d[0] > paused + 5.0 + 2.0), "not recovered 2 s after the pause"
