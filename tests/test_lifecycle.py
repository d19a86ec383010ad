"""Fault injection over the run lifecycle against a real, killable redis-server (AOF, fsync always).

Faults are injected through the lifecycle's ``hook(step)`` between its steps: the lock is lost
(expired, another run takes it and starts writing) or the Redis process is killed (SIGKILL) after
the lists, after the metadata, just before the flip and just after it, or while an old run is being
retired; rollback is tried to every kind of run.  After each: ``current`` names a run listed complete
whose meta, popular list, user index and every user list exist; the real API answers known and
unknown users without a 5xx; the next run leaves no orphan keys.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import redis

from batch.lifecycle import commit, missing, publish, rollback
from batch.store import LostLockError, RunStore, StoreError
from lookup_api import create_app
from lookup_api.contract.items import encode_items
from lookup_api.contract.keys import Keys
from tests.conftest import RedisProcess

USERS = range(1, 31)
STEPS = ["lists", "meta", "before_flip", "after_flip"]
P, A, B, N = (f"2026010{i}T000000Z-{tag}" for i, tag in ((1, "0001"), (2, "000a"), (3, "000b"), (4, "0004")))


def lists_for(run_id: str, users=USERS):
    return [(u, encode_items([{"movie_id": u, "title": f'{run_id} "{u}"', "genres": ["Drama"],
                               "score": -0.5, "predicted_rating": 4.1}])) for u in users]


def popular_of(run_id: str) -> bytes:
    return encode_items([{"movie_id": 0, "title": run_id, "genres": [], "score": 4.5,
                          "predicted_rating": 4.4}])


def run(store: RunStore, run_id: str, ts: int, keep: int = 2, **kwargs):
    meta = {"created_ts": str(ts)}
    return publish(store, run_id, lists_for(run_id), popular_of(run_id), meta, keep, **kwargs)


@pytest.fixture
def server(tmp_path):
    """A private redis-server with an fsync-always AOF: a SIGKILL loses nothing acknowledged."""
    proc = RedisProcess(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def store(server):
    return RunStore(server.client(), Keys(), chunk=7)  # several pipelined chunks per run


def assert_serving(store: RunStore, url: str) -> str:
    """``current`` is listed complete with every key; the API serves known and unknown users (no 5xx)."""
    client, keys = store.client, store.keys
    live = store.current()
    assert live in dict(store.runs()), f"current {live} is not listed complete"
    assert store.meta(live)["status"] == "complete"
    assert client.exists(keys.meta(live), keys.popular(live), keys.users(live)) == 3
    users = json.loads(client.get(keys.users(live)))
    assert users and all(client.exists(keys.user(live, u)) for u in users)
    http = create_app({"REDIS_URL": url, "TESTING": True, "POINTER_TTL": 0.0}).test_client()
    for uid in (users[0], users[-1], 999_999):
        resp = http.get(f"/recommendations/{uid}")
        assert resp.status_code == 200, (uid, resp.status_code, resp.get_json())
        doc = resp.get_json()
        assert doc["run_id"] == live and doc["source"] == ("popular" if uid == 999_999 else "personalized")
    assert http.get("/popular").status_code == 200 and http.get("/readyz").status_code == 200
    return live


def assert_no_orphans(store: RunStore) -> None:
    """Every run key belongs to a listed run with all its keys; nothing is left pending."""
    listed = dict(store.runs())
    owners = {k.decode().split(":")[2] for k in store.client.scan_iter(match="recsys:run:*")}
    assert owners == set(listed), f"orphan keys of {owners - set(listed)}"
    assert store.pending() == []
    assert all(missing(store, r) == [] for r in listed)


@contextmanager
def scan_fails(store: RunStore, before=None):
    """Within the block, the SCAN that deletes a run's user lists fails (after ``before()`` ran)."""
    real = store.client.scan_iter

    def scan(*args, **kwargs):
        if before is not None:
            before()
        raise redis.ConnectionError("the connection died mid-retirement")

    store.client.scan_iter = scan
    try:
        yield
    finally:
        store.client.scan_iter = real


def lose_lock_to_b(store: RunStore, state: dict):
    """The hook of run A: its lock expires; run B takes the lock and starts writing its lists."""

    def hook(step: str) -> None:
        if step == state["at"]:
            store.client.delete(store.keys.lock)  # what expiry does
            state["b_token"] = store.acquire(ttl=60)
            store.write_lists(B, lists_for(B), state["b_token"])

    return hook


@pytest.mark.parametrize("step", STEPS)
def test_lock_lost_at_each_step(store, server, step):
    run(store, P, 1)
    state = {"at": step}
    if step == "after_flip":  # A flipped while it held the lock: it stays live, retires nothing
        report = run(store, A, 2, hook=lose_lock_to_b(store, state))
        assert report.retired == [] and store.current() == A
    else:
        with pytest.raises(LostLockError):
            run(store, A, 2, hook=lose_lock_to_b(store, state))
        assert store.current() == P and A not in dict(store.runs())
    assert_serving(store, server.url)
    assert all(store.client.exists(store.keys.user(B, u)) for u in USERS), "A deleted B's pending lists"
    commit(store, B, popular_of(B), list(USERS), {"created_ts": "3"}, 2, state["b_token"])  # B goes on
    store.release(state["b_token"])
    assert assert_serving(store, server.url) == B
    if step != "after_flip":
        with pytest.raises(StoreError, match="unknown or was deleted"):
            rollback(store, A)  # never to the run that lost its lock
    run(store, N, 4)
    assert assert_serving(store, server.url) == N
    assert_no_orphans(store)


@pytest.mark.parametrize("step", STEPS)
def test_redis_killed_at_each_step(store, server, step):
    run(store, P, 1)

    def kill(at: str) -> None:
        if at == step:
            server.stop()

    with pytest.raises(redis.ConnectionError):
        run(store, A, 2, hook=kill)
    server.start()  # the AOF brings back everything acknowledged before the kill
    store = RunStore(server.client(), Keys(), chunk=7)
    assert store.current() == (A if step == "after_flip" else P)
    assert_serving(store, server.url)
    store.client.delete(store.keys.lock)  # the dead run's lock expires (its TTL, shortened here)
    run(store, N, 4)
    assert assert_serving(store, server.url) == N
    assert_no_orphans(store)
    assert [r for r, _ in store.runs()] == [N, A if step == "after_flip" else P]


def test_issue_reproduction_lost_lock_run_is_not_listed_nor_rolled_back_to(store, server):
    """Run A loses its lock after its lists; B publishes and retires A's keys; A's commit is refused."""
    run(store, P, 1)
    token_a = store.acquire(ttl=60)
    store.write_lists(A, lists_for(A), token_a)
    store.client.delete(store.keys.lock)  # A's lock expires during a pause
    run(store, B, 3)  # B takes the lock, publishes, retires A's pending keys
    assert not store.client.exists(store.keys.user(A, 1))
    with pytest.raises(LostLockError):
        commit(store, A, popular_of(A), list(USERS), {"created_ts": "2"}, 2, token_a)
    assert A not in dict(store.runs()) and store.meta(A).get("status") != "complete"
    assert rollback(store) == P  # not A, whose lists are gone
    assert assert_serving(store, server.url) == P
    run(store, N, 4)
    assert_no_orphans(store)


def test_rollback_to_every_kind_of_run(store, server):
    for i, run_id in enumerate([P, A, B], start=1):
        run(store, run_id, i, keep=3)
    assert rollback(store, A) == A  # a complete run
    assert assert_serving(store, server.url) == A
    assert rollback(store, B) == B  # the run rolled back from: explicit rollback allowed
    assert rollback(store) == P  # the default skips A (now rolled back from)
    assert assert_serving(store, server.url) == P

    def kill(at: str) -> None:
        if at == "before_flip":
            server.stop()

    with pytest.raises(redis.ConnectionError):  # Redis dies inside a rollback
        rollback(store, B, hook=kill)
    server.start()
    store = RunStore(server.client(), Keys(), chunk=7)
    assert assert_serving(store, server.url) == P
    store.client.delete(store.keys.lock)  # the dead rollback's lock expires

    lost = "20260105T000000Z-0105"  # a lost-lock run
    token = store.acquire(ttl=60)
    store.write_lists(lost, lists_for(lost), token)
    store.client.delete(store.keys.lock)
    with pytest.raises(LostLockError):
        commit(store, lost, popular_of(lost), list(USERS), {"created_ts": "5"}, 3, token)
    with pytest.raises(StoreError, match="unknown or was deleted"):
        rollback(store, lost)

    store.client.unlink(store.keys.user(B, 17))  # listed, but a list is gone (evicted, deleted by hand)
    with pytest.raises(StoreError, match=r"user lists \(1 of 30\) missing"):
        rollback(store, B)
    with pytest.raises(redis.ConnectionError), scan_fails(store):
        store.delete_run(A)  # a retirement cut short: unlisted, popular list, index and meta gone
    with pytest.raises(StoreError, match="unknown or was deleted"):
        rollback(store, A)
    assert assert_serving(store, server.url) == P  # every refusal left current alone

    run(store, N, 6, keep=2)
    assert assert_serving(store, server.url) == N
    assert_no_orphans(store)
    assert [r for r, _ in store.runs()] == [N, P]  # the broken B and the half-retired A are gone


def test_retirement_cut_short_is_finished_by_the_next_run(store, server):
    """The run is killed while it retires an old run: after the history entry, the popular list, the
    index and the meta went, before the SCAN over its user lists (the issue's repro)."""
    run(store, P, 1)
    run(store, A, 2)
    with pytest.raises(redis.ConnectionError), scan_fails(store, before=server.stop):
        run(store, B, 3)  # flips to B, then dies retiring P
    server.start()
    store = RunStore(server.client(), Keys(), chunk=7)
    assert assert_serving(store, server.url) == B
    assert P not in dict(store.runs()) and not store.client.exists(store.keys.users(P))
    assert store.client.exists(store.keys.user(P, 1)), "P's user lists outlive the cut-short retirement"
    store.client.delete(store.keys.lock)  # the dead run's lock expires (its TTL, shortened here)
    run(store, N, 4)
    assert assert_serving(store, server.url) == N
    assert_no_orphans(store)  # P's 30 user lists are gone too
    assert [r for r, _ in store.runs()] == [N, B]


def test_lock_lost_between_the_check_and_the_flip_after_the_new_holder_retired_us(store, server):
    """The narrowest window: A passed its lock check; B then published and deleted A's keys."""
    run(store, P, 1)

    def b_publishes_meanwhile(step: str) -> None:
        if step == "before_flip":  # A is listed complete now; its lock expires, B publishes and retires A
            store.client.delete(store.keys.lock)
            run(store, B, 3)

    with pytest.raises(LostLockError):
        run(store, A, 2, hook=b_publishes_meanwhile)
    assert A not in dict(store.runs()) and assert_serving(store, server.url) == B
    run(store, N, 4)
    assert_no_orphans(store)  # what A wrote after B deleted its keys is gone too
