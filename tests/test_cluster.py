"""Batch and API against a real 3-master Redis Cluster on loopback (single-key flip, no cross-slot)."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from batch.cli import cli
from batch.store import RunStore
from lookup_api import create_app
from lookup_api.contract.keys import Keys
from tests.cluster import LocalCluster

pytestmark = pytest.mark.slow
SMALL = ["--top-n", "20", "--candidates", "30", "--content-candidates", "10", "--als-factors", "8",
         "--svd-factors", "8", "--keep", "1"]


@pytest.fixture
def cluster(tmp_path):
    local = LocalCluster(tmp_path)
    try:
        local.start()
        yield local
    finally:
        local.stop()


def test_publish_lookup_and_node_restart(cluster, small_dir):
    base = ["--redis-url", cluster.url, "--data-dir", str(small_dir)]
    first = CliRunner().invoke(cli, [*base, "run", *SMALL])
    assert first.exit_code == 0, first.output
    client = cluster.client()
    store = RunStore(client, Keys())
    run1 = store.current()
    # run keys spread over every master, not hashed into one slot
    per_node = {p: len(list(__import__("redis").Redis(port=p).scan_iter(match=f"recsys:run:{run1}:*")))
                for p in cluster.ports}
    assert all(n > 50 for n in per_node.values()), per_node

    second = CliRunner().invoke(cli, [*base, "run", *SMALL])  # keep 1: run1 retired on all nodes
    assert second.exit_code == 0, second.output
    run2 = store.current()
    assert run2 != run1 and list(client.scan_iter(match=f"recsys:run:{run1}:*")) == []

    app = create_app({"REDIS_URL": cluster.url, "TESTING": True, "POINTER_TTL": 0.0, "LIST_CACHE_SIZE": 0,
                      "REDIS_SOCKET_TIMEOUT": 0.5, "REDIS_CONNECT_TIMEOUT": 0.5})
    http = app.test_client()
    for uid in range(1, 301):
        doc = http.get(f"/recommendations/{uid}").get_json()
        assert doc["run_id"] == run2 and doc["source"] == "personalized"
        assert doc["items"] == store.user_list(run2, uid)[:10]
    assert http.get("/recommendations/777777").get_json()["source"] == "popular"
    assert http.get("/readyz").status_code == 200

    from lookup_api.contract.items import catalog_heads

    heads = catalog_heads(node_get(cluster, Keys().catalog(run2)))  # read before a node goes away
    victim = cluster.ports[1]
    cluster.kill(victim)  # a master goes away mid-lookup: its slots are unserved
    statuses, stale = set(), 0
    started = time.monotonic()
    for uid in range(1, 301):
        resp = http.get(f"/recommendations/{uid}")
        statuses.add(resp.status_code)
        assert resp.status_code in (200, 503) and resp.is_json
        if resp.status_code == 200:
            doc = resp.get_json()
            assert doc["run_id"] == run2
            stale += bool(doc.get("stale"))
            assert doc.get("stale") or doc["items"] == store_items(cluster, run2, uid, heads)
    print(f"\nnode {victim} down: statuses {sorted(statuses)}, {stale} stale popular fallbacks "
          f"over 300 lookups in {time.monotonic() - started:.1f}s")
    assert stale > 0  # lookups whose slot lived on the dead node fell back instead of failing
    cluster.start_node(victim)  # same nodes.conf + AOF: it rejoins with its slots and keys
    cluster.wait_ok()
    deadline = time.monotonic() + 20
    while True:
        docs = [http.get(f"/recommendations/{uid}").get_json() for uid in range(1, 301)]
        if all(d.get("source") == "personalized" and not d.get("stale") for d in docs):
            break
        assert time.monotonic() < deadline, "API did not recover after the node restarted"
        time.sleep(0.5)
    assert http.get("/readyz").status_code == 200


def node_get(cluster: LocalCluster, key: str) -> bytes | None:
    """GET ``key`` straight from the node that owns it (the test's own view of the truth)."""
    import redis

    for port in cluster.procs:
        try:
            raw = redis.Redis(port=port).get(key)
        except (redis.ResponseError, redis.ConnectionError):  # MOVED: another node owns it; or killed
            continue
        if raw is not None:
            return raw
    return None


def store_items(cluster: LocalCluster, run_id: str, uid: int, heads: dict) -> list[dict]:
    """Return the first 10 items of a stored list, titles from the run's catalog (``heads``)."""
    from lookup_api.contract.items import decode_items

    raw = node_get(cluster, Keys().user(run_id, uid))
    return decode_items(raw, heads)[:10] if raw is not None else []
