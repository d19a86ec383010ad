"""The lookup API with Flask's test client against real Redis, data published by the batch code."""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys

import pytest
import redis

from batch.store import RunStore
from lookup_api import create_app
from lookup_api.contract.keys import Keys


@pytest.fixture
def make_app(redis_url, prefix):
    def make(**config):
        return create_app({"REDIS_URL": redis_url, "PREFIX": prefix, "TESTING": True, **config})

    return make


@pytest.fixture
def api(make_app, publish_small):
    run_id = publish_small()
    return make_app().test_client(), run_id


def test_known_user_gets_personalized_list(api, client, prefix):
    http, run_id = api
    resp = http.get("/recommendations/7")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    doc = resp.get_json()
    assert doc["user_id"] == 7 and doc["source"] == "personalized" and doc["run_id"] == run_id
    assert doc["generated_at"] and len(doc["items"]) == 10
    stored = RunStore(client, Keys(prefix)).user_list(run_id, 7)
    assert doc["items"] == stored[:10]
    assert list(doc["items"][0]) == ["movie_id", "title", "genres", "score", "predicted_rating"]
    assert all(1.0 <= it["predicted_rating"] <= 5.0 for it in doc["items"])


def test_unknown_user_gets_popular_list_and_says_so(api, client, prefix):
    http, run_id = api
    doc = http.get("/recommendations/123456?n=5").get_json()
    assert doc["source"] == "popular" and doc["user_id"] == 123456 and len(doc["items"]) == 5
    assert doc["items"] == RunStore(client, Keys(prefix)).popular_list(run_id)[:5]
    # same fields, same meanings as a personalised list: score ranks, predicted_rating is SVD's 1-5
    assert all(list(it) == list(doc["items"][0]) and 1.0 <= it["predicted_rating"] <= 5.0
               for it in doc["items"])


@pytest.mark.parametrize("n", [1, 7, 20])
def test_n_slices(api, n):
    http, _ = api
    assert len(http.get(f"/recommendations/3?n={n}").get_json()["items"]) == n
    assert len(http.get(f"/popular?n={n}").get_json()["items"]) == n


def test_popular_health_ready_openapi(api):
    http, run_id = api
    doc = http.get("/popular").get_json()
    assert doc["source"] == "popular" and doc["run_id"] == run_id and len(doc["items"]) == 10
    assert http.get("/healthz").get_json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and run_id in ready.get_json()["reason"]
    assert http.get("/openapi.json").get_json()["openapi"].startswith("3.")


@pytest.mark.parametrize("path", [
    "/recommendations/abc", "/recommendations/0", "/recommendations/-3", "/recommendations/1.5",
    "/recommendations/99999999999999999999", "/recommendations/%D9%A1",  # Arabic-Indic digit one
    "/recommendations/3?n=0", "/recommendations/3?n=-1", "/recommendations/3?n=abc",
    "/recommendations/3?n=21", "/recommendations/3?n=", "/popular?n=1000", "/popular?n=2.5",
])
def test_bad_input_is_400_json(api, path):
    http, _ = api
    resp = http.get(path)
    assert resp.status_code == 400, path
    assert resp.get_json()["status"] == 400 and resp.get_json()["error"]


def test_404_and_405_are_json(api):
    http, _ = api
    missing = http.get("/nope")
    assert missing.status_code == 404 and missing.get_json()["status"] == 404
    wrong = http.post("/recommendations/3")
    assert wrong.status_code == 405 and wrong.get_json()["status"] == 405
    for method in ("put", "delete", "patch"):
        assert getattr(http, method)("/popular").status_code == 405  # no write paths


def test_not_ready_before_first_publish(make_app):
    http = make_app().test_client()
    ready = http.get("/readyz")
    assert ready.status_code == 503 and "no run" in ready.get_json()["reason"]
    assert http.get("/recommendations/1").status_code == 503
    assert http.get("/healthz").status_code == 200


def test_no_500_on_random_paths_and_queries(api):
    http, _ = api
    rng = random.Random(1234)
    alphabet = string.ascii_letters + string.digits + "-_.~%!$&'()*+,;=:@/?é "
    for _ in range(300):
        path = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        kind = rng.randrange(3)
        url = ("/recommendations/" + path if kind == 0 else
               f"/recommendations/{rng.randint(-5, 10**6)}?n={path}" if kind == 1 else "/" + path.lstrip("/"))
        resp = http.get(url)
        assert resp.status_code in (200, 400, 404, 405), (url, resp.status_code)
        assert resp.is_json, url


def test_openapi_documents_every_route_and_matches_responses(api):
    http, _ = api
    spec = http.get("/openapi.json").get_json()
    app_routes = {r.rule.replace("<user_id>", "{user_id}").replace("<movie_id>", "{movie_id}")
                  for r in http.application.url_map.iter_rules() if r.endpoint != "static"}
    assert app_routes == set(spec["paths"])

    def deref(node):
        if isinstance(node, dict) and "$ref" in node:
            target = spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return deref(target)
        return node

    def check(value, schema, where):
        schema = deref(schema)
        kind = schema.get("type")
        if value is None:
            assert schema.get("nullable"), where
            return
        types = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
                 "boolean": bool}
        if kind:
            assert isinstance(value, types[kind]), f"{where}: {value!r} is not {kind}"
        if "enum" in schema:
            assert value in schema["enum"], where
        if kind == "object":
            for req in schema.get("required", []):
                assert req in value, f"{where}: missing {req}"
            props = schema.get("properties", {})
            if props:
                assert set(value) <= set(props), f"{where}: undocumented {set(value) - set(props)}"
            for key, sub in props.items():
                if key in value:
                    check(value[key], sub, f"{where}.{key}")
        if kind == "array":
            for i, item in enumerate(value):
                check(item, schema.get("items", {}), f"{where}[{i}]")

    cases = [("/recommendations/{user_id}", "/recommendations/5", 200),
             ("/recommendations/{user_id}", "/recommendations/777777", 200),
             ("/recommendations/{user_id}", "/recommendations/x", 400),
             ("/popular", "/popular?n=3", 200), ("/popular", "/popular?n=0", 400),
             ("/healthz", "/healthz", 200), ("/readyz", "/readyz", 200)]
    for route, url, status in cases:
        resp = http.get(url)
        assert resp.status_code == status
        documented = deref(spec["paths"][route]["get"]["responses"][str(status)])
        check(resp.get_json(), documented["content"]["application/json"]["schema"], url)


def test_pointer_race_retries_on_the_new_run_never_mixes(make_app, publish_small, client, prefix):
    first = publish_small()
    app = make_app(POINTER_TTL=3600.0)  # the app keeps believing in `first` unless told otherwise
    http = app.test_client()
    assert http.get("/recommendations/4").get_json()["run_id"] == first
    second = publish_small(keep=1)  # retires `first`: its keys are gone now
    assert not list(client.scan_iter(match=f"{prefix}:run:{first}:*"))
    store = RunStore(client, Keys(prefix))
    # user 5 and the unknown user were never read: the lookup finds `first` gone and retries
    for uid in (5, 999999):
        doc = http.get(f"/recommendations/{uid}").get_json()
        assert doc["run_id"] == second
        expected = store.user_list(second, uid) if uid == 5 else store.popular_list(second)
        assert doc["items"] == expected[:10]
    assert http.get("/popular").get_json()["run_id"] == second
    assert http.get("/recommendations/4").get_json()["run_id"] == second


def test_half_deleted_run_never_serves_popular_to_a_known_user(make_app, publish_small, client, prefix):
    first = publish_small()
    http = make_app(POINTER_TTL=3600.0).test_client()
    assert http.get("/recommendations/4").get_json()["run_id"] == first
    second = publish_small()
    client.unlink(Keys(prefix).user(first, 6))  # `first` is being deleted: user 6 already gone
    doc = http.get("/recommendations/6").get_json()
    assert doc["source"] == "personalized" and doc["run_id"] == second


def test_stale_popular_while_redis_is_down_then_recovers(redis_process, small_dir):
    from batch.job import run_job
    from batch.params import Params
    from tests.conftest import SMALL_PARAMS

    store = RunStore(redis.Redis.from_url(redis_process.url), Keys("recsys"))
    run_id = run_job(small_dir, Params(**SMALL_PARAMS), store).run_id
    app = create_app({"REDIS_URL": redis_process.url, "TESTING": True, "POINTER_TTL": 0.0,
                      "REDIS_SOCKET_TIMEOUT": 0.3, "REDIS_CONNECT_TIMEOUT": 0.3})
    http = app.test_client()
    assert http.get("/recommendations/2").get_json()["source"] == "personalized"

    redis_process.stop()
    import time

    started = time.monotonic()
    doc = http.get("/recommendations/2").get_json()
    assert doc["stale"] is True and doc["source"] == "popular" and doc["run_id"] == run_id
    assert http.get("/popular?n=3").get_json()["stale"] is True
    ready = http.get("/readyz")
    assert ready.status_code == 503 and "unavailable" in ready.get_json()["reason"]
    assert time.monotonic() - started < 3.0  # bounded by the timeouts, never a hang

    fresh = create_app({"REDIS_URL": redis_process.url, "TESTING": True,
                        "REDIS_CONNECT_TIMEOUT": 0.3}).test_client()
    down = fresh.get("/recommendations/2")  # nothing cached yet: 503 JSON, not 500
    assert down.status_code == 503 and down.get_json()["status"] == 503

    redis_process.start()  # --save "": a restarted server is empty, so publish again
    run_job(small_dir, Params(**SMALL_PARAMS), RunStore(redis.Redis.from_url(redis_process.url), Keys()))
    deadline = time.monotonic() + 3.0  # the app retries Redis RETRY_AFTER (1 s) after its last failure
    while "stale" in (doc := http.get("/recommendations/2").get_json()):
        assert time.monotonic() < deadline, "did not recover after Redis came back"
        time.sleep(0.1)
    assert doc["source"] == "personalized"  # recovered without restart


def test_importing_the_api_pulls_no_batch_libraries():
    code = ("import sys, lookup_api, lookup_api.app, lookup_api.views; "
            "heavy = [m for m in ('implicit', 'surprise', 'sklearn', 'pandas', 'scipy', 'numpy') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_list_cache_reads_redis_every_time(make_app, publish_small, client, prefix):
    run_id = publish_small()
    http = make_app(LIST_CACHE_SIZE=0).test_client()
    assert len(http.get("/recommendations/3?n=4").get_json()["items"]) == 4
    key = Keys(prefix).user(run_id, 3)
    raw = client.get(key)  # [[movie_id,score,rating],...]: the first item's score becomes 1000.0
    head, rest = raw[2:].split(b",", 1)
    client.set(key, b"[[" + head + b",1000.0," + rest.split(b",", 1)[1])
    first = http.get("/recommendations/3?n=20").get_json()["items"][0]
    assert first["score"] == 1000.0  # read from Redis again, not from a cache


def test_response_is_compact_json_with_latin1_titles_intact(api):
    http, _ = api
    raw = http.get("/popular?n=20").get_data()
    assert b": " not in raw[:40]
    doc = json.loads(raw)
    assert all(isinstance(it["movie_id"], int) for it in doc["items"])
    titles = [it["title"] for it in doc["items"]]
    assert any("Café" in t for t in titles), titles  # latin-1 in movies.dat, UTF-8 JSON out


TRICKY = 'Tricky {i} "quoted" back\\slash }} ,{{"movie_id":{i}}} Amélie, {{the}} "end" (2001)'


@pytest.fixture
def tricky_run(tmp_path, client, prefix):
    """Publish, with the real batch writer, a catalogue whose titles hold quotes, backslashes, é and }."""
    from batch.job import run_job
    from batch.params import Params
    from tests.conftest import SMALL_PARAMS
    from tests.synth import random_dataset, write_dataset

    ratings, movies = random_dataset()
    movies = [(m, TRICKY.format(i=m), g) for m, _, g in movies]
    directory = write_dataset(tmp_path / "tricky", ratings, movies)
    return run_job(directory, Params(**SMALL_PARAMS), RunStore(client, Keys(prefix))).run_id


def test_reader_cuts_the_writers_real_bytes_exactly(tricky_run, client, prefix, make_app):
    from lookup_api.contract.items import ITEM_KEYS, catalog_heads, decode_items, encode_items, first_items

    keys = Keys(prefix)
    catalog = catalog_heads(client.get(keys.catalog(tricky_run)))  # stored once for the run
    raws = [client.get(keys.user(tricky_run, u)) for u in (1, 2, 150, 300)]
    raws.append(client.get(keys.popular(tricky_run)))
    for raw in raws:
        items = decode_items(raw, catalog)
        assert len(items) >= 20 and all(it["title"].startswith("Tricky") for it in items)
        assert all(list(it) == list(ITEM_KEYS) for it in items)  # fails if the writer's key order changes
        assert encode_items(items) == raw  # the contract's encoder is the writer's, byte for byte
        for n in range(1, len(items) + 2):
            cut = first_items(raw, n)
            assert cut == encode_items(items[:n]) and decode_items(cut, catalog) == items[:n], n
    http = make_app().test_client()
    doc = http.get("/recommendations/2?n=3").get_json()
    assert doc["items"] == decode_items(raws[1], catalog)[:3]
    assert '"quoted" back\\slash }' in doc["items"][0]["title"]


def test_reader_is_never_silently_wrong_on_another_key_order():
    from lookup_api.contract.items import encode_items, first_items

    items = [{"movie_id": i, "title": "x", "genres": [], "score": 1.0, "predicted_rating": 3.0}
             for i in range(5)]
    reordered = json.dumps([dict(reversed(list(it.items()))) for it in items]).encode()
    assert json.loads(first_items(reordered, 2)) == [dict(reversed(list(it.items()))) for it in items[:2]]
    with pytest.raises(ValueError, match="expected"):
        encode_items([{"movie_id": 1, "title": "x", "genres": [], "score": 1.0}])
