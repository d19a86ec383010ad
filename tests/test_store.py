"""Publishing to real Redis: atomic flip, history, retirement, orphans, rollback, lock."""

from __future__ import annotations

import pytest
import redis

from batch.lifecycle import commit, rollback
from batch.lifecycle import publish as publish_run
from batch.store import LockedError, LostLockError, RunStore, StoreError
from lookup_api.contract.items import catalog_heads, decode_items, encode_catalog_items, encode_items
from lookup_api.contract.keys import Keys


def item(movie_id: int, title: str, score: float = 1.0) -> dict:
    return {"movie_id": movie_id, "title": title, "genres": [], "score": score, "predicted_rating": 4.0}


POPULAR = encode_items([item(0, "popular", 0.0)])


def lists_for(tag: str, users=(1, 2, 3)):
    return [(u, encode_items([item(u, tag)])) for u in users]


def publish(store: RunStore, run_id: str, keep: int = 2, **meta):
    popular = encode_items([item(0, run_id, 0.0)])
    meta = {"created_ts": meta.get("ts", "1")}
    catalog = [(store.keys.catalog(run_id), encode_catalog_items([item(0, run_id, 0.0)]))]
    return publish_run(store, run_id, lists_for(run_id), popular, meta, keep=keep, extra=catalog)


@pytest.fixture
def store(client, prefix):
    return RunStore(client, Keys(prefix), chunk=2)


def run_keys(client, keys: Keys, run_id: str) -> set[bytes]:
    return set(client.scan_iter(match=keys.run_pattern(run_id)))


def test_publish_writes_everything_then_flips(store, client):
    assert store.current() is None
    report = publish(store, "20260101T000000Z-aaaa")
    assert report.users == 3 and store.current() == "20260101T000000Z-aaaa"
    assert store.user_list("20260101T000000Z-aaaa", 2)[0]["movie_id"] == 2
    assert store.meta("20260101T000000Z-aaaa")["status"] == "complete"
    assert len(run_keys(client, store.keys, "20260101T000000Z-aaaa")) == 3 + 4  # + popular users meta catalog
    assert client.get(store.keys.users("20260101T000000Z-aaaa")) == b"[1,2,3]"
    assert client.zcard(store.keys.pending) == 0


def test_keep_last_k_runs_and_never_the_live_one(store, client):
    ids = [f"2026010{i}T000000Z-aaaa" for i in range(1, 5)]
    for i, run_id in enumerate(ids):
        report = publish(store, run_id, keep=2, ts=str(i + 1))
    assert report.retired == [ids[1]]
    assert [r for r, _ in store.runs()] == [ids[3], ids[2]]
    for gone in ids[:2]:
        assert run_keys(client, store.keys, gone) == set()
    assert run_keys(client, store.keys, ids[2])  # the grace copy is intact


def test_failed_publish_leaves_current_and_next_run_removes_orphans(store, client):
    publish(store, "20260101T000000Z-aaaa")

    def dying():
        yield from lists_for("x", users=(1, 2, 3, 4, 5))
        raise RuntimeError("crash in the middle")

    with pytest.raises(RuntimeError):
        publish_run(store, "20260102T000000Z-bbbb", dying(), b"[]", {"created_ts": "2"})
    assert store.current() == "20260101T000000Z-aaaa"
    assert run_keys(client, store.keys, "20260102T000000Z-bbbb")  # orphaned keys exist...
    publish(store, "20260103T000000Z-cccc", ts="3")  # deletes them before it writes (lifecycle.prepare)
    assert run_keys(client, store.keys, "20260102T000000Z-bbbb") == set()  # ...and are gone now
    assert store.pending() == []


def test_rollback_default_explicit_and_refused(store):
    publish(store, "20260101T000000Z-aaaa", ts="1")
    publish(store, "20260102T000000Z-bbbb", ts="2")
    assert rollback(store) == "20260101T000000Z-aaaa"
    assert store.current() == "20260101T000000Z-aaaa"
    with pytest.raises(StoreError, match="no earlier complete run"):
        rollback(store)
    assert rollback(store, "20260102T000000Z-bbbb") == "20260102T000000Z-bbbb"
    with pytest.raises(StoreError, match="unknown or was deleted"):
        rollback(store, "20250101T000000Z-dead")


def test_rolled_back_run_survives_the_next_publish_and_the_bad_one_goes(store, client):
    for i, run_id in enumerate(["20260101T000000Z-aaaa", "20260102T000000Z-bbbb"]):
        publish(store, run_id, ts=str(i + 1))
    rollback(store)  # bbbb was bad: back to aaaa
    publish(store, "20260103T000000Z-cccc", keep=2, ts="3")
    assert [r for r, _ in store.runs()] == ["20260103T000000Z-cccc", "20260101T000000Z-aaaa"]
    assert run_keys(client, store.keys, "20260102T000000Z-bbbb") == set()
    assert rollback(store) == "20260101T000000Z-aaaa"  # the good run, not the bad one
    with pytest.raises(StoreError, match="no earlier complete run"):
        rollback(store)  # cccc is now marked rolled back from; nothing older


def test_previous_live_run_is_kept_for_readers(store):
    for i, run_id in enumerate(["20260101T000000Z-aaaa", "20260102T000000Z-bbbb"]):
        publish(store, run_id, ts=str(i + 1))
    rollback(store, "20260101T000000Z-aaaa")
    rollback(store, "20260102T000000Z-bbbb")  # an explicit rollback clears its own mark
    publish(store, "20260103T000000Z-cccc", keep=2, ts="3")
    assert [r for r, _ in store.runs()] == ["20260103T000000Z-cccc", "20260102T000000Z-bbbb"]


def test_a_run_that_lost_its_lock_neither_flips_nor_deletes_the_new_holders_keys(store, client):
    publish(store, "20260101T000000Z-aaaa", ts="1")
    token_a = store.acquire(ttl=60)
    store.write_lists("20260102T000000Z-bbbb", lists_for("b"), token_a)
    client.delete(store.keys.lock)  # A's lock expired...
    token_b = store.acquire(ttl=60)  # ...and B took it and is writing
    store.write_lists("20260103T000000Z-cccc", lists_for("c"), token_b)
    with pytest.raises(LostLockError, match="lost the batch lock"):
        commit(store, "20260102T000000Z-bbbb", POPULAR, [1, 2, 3], {"created_ts": "2"}, 2, token_a)
    assert store.current() == "20260101T000000Z-aaaa"
    assert "20260102T000000Z-bbbb" not in dict(store.runs())
    assert run_keys(client, store.keys, "20260103T000000Z-cccc")  # B's pending lists are intact
    with pytest.raises(LostLockError, match="while writing"):  # A's next chunk is refused too
        store.write_lists("20260102T000000Z-bbbb", lists_for("b"), token_a)
    commit(store, "20260103T000000Z-cccc", POPULAR, [1, 2, 3], {"created_ts": "3"}, 2, token_b)
    assert store.current() == "20260103T000000Z-cccc"


def test_rollback_is_refused_while_a_run_holds_the_lock(store):
    for i, run_id in enumerate(["20260101T000000Z-aaaa", "20260102T000000Z-bbbb"]):
        publish(store, run_id, ts=str(i + 1))
    with store.lock(), pytest.raises(LockedError):
        rollback(store)
    assert store.current() == "20260102T000000Z-bbbb"


def test_lock_is_exclusive_and_expires(store, client):
    with store.lock(ttl=30), pytest.raises(LockedError, match="holds the lock .*: another batch run is in"), \
            store.lock():
        pass
    assert client.get(store.keys.lock) is None  # released
    import time

    with store.lock(ttl=1.5):
        time.sleep(2.0)  # the heartbeat keeps renewing it past its TTL
        assert client.pttl(store.keys.lock) > 0
        with pytest.raises(LockedError), store.lock():
            pass
    client.set(store.keys.lock, "crashed", px=50)  # a crashed holder: nobody renews
    time.sleep(0.1)
    with store.lock():
        pass


def test_popular_and_user_lists_round_trip(store):
    publish(store, "20260101T000000Z-aaaa")
    assert store.popular_list("20260101T000000Z-aaaa")[0]["title"] == "20260101T000000Z-aaaa"
    assert store.user_list("20260101T000000Z-aaaa", 99) is None
    catalog = catalog_heads(encode_catalog_items([item(1, "é")]))
    assert decode_items(encode_items([item(1, "é")]), catalog) == [item(1, "é")]


def test_keys_reject_bad_prefix():
    for bad in ("bad prefix with spaces", "", "a}b", "{}", "x{a}{b}"):
        with pytest.raises(ValueError):
            Keys(bad)


@pytest.mark.parametrize("prefix", ["recsys", "{recsys}", "tenant-{eu}.recsys"])
def test_lock_shares_the_cluster_slot_of_current(prefix):
    """The flip script reads the lock and sets current: both keys must hash to one slot."""
    from redis.crc import key_slot

    keys = Keys(prefix)
    assert keys.lock.startswith(f"{prefix}:lock")
    assert key_slot(keys.lock.encode()) == key_slot(keys.current.encode())


def test_connection_errors_become_store_errors():
    from batch.store import redis_errors

    dead = redis.Redis.from_url("redis://:s3cret@127.0.0.1:1/0", socket_connect_timeout=0.2)
    with pytest.raises(StoreError) as err, redis_errors("redis://:s3cret@127.0.0.1:1/0"):
        dead.ping()
    assert "s3cret" not in str(err.value) and "***" in str(err.value)


def test_passwords_are_redacted_everywhere_in_urls():
    from lookup_api.contract.connection import redact_url

    assert redact_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("redis://h:6379/0?password=s3cret&db=2") == "redis://h:6379/0?password=***&db=2"
    assert redact_url("https://u:pw@mirror/ml-1m.zip") == "https://u:***@mirror/ml-1m.zip"
