"""Faults a cluster delivers, against the real batch CLI and private redis-servers (issue 20, 22).

A full Redis (maxmemory + noeviction) and one that evicts (allkeys-lru), SIGTERM in training and
mid-publish, a degenerate input file, ids beyond the API's range, and a lock left by a dead run.
After each: ``current`` names a complete run (or nothing was published yet), and the next run
starts with no manual step.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from batch.cli import cli
from batch.store import RunStore
from lookup_api.contract.keys import Keys
from tests.conftest import RedisProcess
from tests.synth import random_dataset, write_dataset

SMALL = ["--top-n", "20", "--candidates", "30", "--content-candidates", "10", "--als-factors", "8",
         "--svd-factors", "8"]
KEYS = Keys()


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_keys(client: redis.Redis) -> int:
    return sum(1 for _ in client.scan_iter(match="recsys:run:*", count=1000))


@pytest.fixture
def big_dir(tmp_path) -> Path:
    """3,000 users x 400 movies: lists of 50 take ~11 MB in Redis (the small dataset's take ~0.7 MB)."""
    return write_dataset(tmp_path / "big", *random_dataset(n_users=12000, n_items=400, per_user=30))


def server_with(tmp_path, *options: str) -> RedisProcess:
    server = RedisProcess(tmp_path, *options)
    server.start()
    return server


@pytest.fixture
def full_redis(tmp_path, small_dir):
    """A private redis-server with noeviction and room for the small run plus ~6 MB: (server, base args)."""
    server = server_with(tmp_path, "--maxmemory-policy", "noeviction")
    base = ["--redis-url", server.url, "--data-dir", str(small_dir)]
    first = invoke(*base, "run", *SMALL)
    assert first.exit_code == 0, first.output
    client = server.client()
    client.config_set("maxmemory", client.info("memory")["used_memory"] + 6 * 2**20)
    yield server, base
    server.stop()


def test_a_run_that_will_not_fit_fails_before_writing_and_says_how_much_is_missing(full_redis, big_dir):
    server, base = full_redis
    client = server.client()
    live, keys_before = client.get(KEYS.current), run_keys(client)
    big = invoke(*base, "run", "--data-dir", str(big_dir), *SMALL, "--top-n", "50")
    assert big.exit_code == 1
    assert re.search(r"needs about [\d.]+ MiB .*: [\d.]+ MiB missing\. Nothing was written", big.output), \
        big.output
    assert client.get(KEYS.current) == live and run_keys(client) == keys_before  # nothing written
    again = invoke(*base, "run", *SMALL)  # a run that fits publishes at once
    assert again.exit_code == 0, again.output


def test_after_an_out_of_memory_failure_the_next_run_that_fits_publishes(full_redis, big_dir, monkeypatch):
    """The estimate misses (hidden here: no maxmemory reported), Redis refuses writes mid-publish."""
    server, base = full_redis
    client = server.client()
    live = client.get(KEYS.current)
    monkeypatch.setattr(RunStore, "memory", lambda self: [{"used": 0, "max": 0, "policy": "noeviction"}],
                        raising=False)
    big = invoke(*base, "run", "--data-dir", str(big_dir), *SMALL, "--top-n", "50")
    monkeypatch.undo()
    assert big.exit_code == 1 and client.get(KEYS.current) == live
    again = invoke(*base, "run", *SMALL)  # no redis-cli, no waiting for the lock to expire
    assert again.exit_code == 0, again.output
    assert "Redis is out of memory" in big.output and "Traceback" not in big.output
    assert client.get(KEYS.current) != live and client.zcard(KEYS.pending) == 0
    assert invoke(*base, "rollback").exit_code == 0  # rollback works again too


DIES_HOLDING_THE_LOCK = """
import os, sys, redis
from batch.store import RunStore
from lookup_api.contract.keys import Keys
store = RunStore(redis.Redis.from_url(sys.argv[1]), Keys())
store.acquire(60)  # no heartbeat, never released
store.client.zadd(store.keys.pending, {sys.argv[2]: 1})
try:
    for i in range(10_000):
        store.client.set(store.keys.user(sys.argv[2], i), b"x" * 4096)
except redis.exceptions.OutOfMemoryError:
    os._exit(0)  # dies as a SIGKILL would: lock held, Redis full of its pending run
os._exit(1)
"""


@pytest.mark.parametrize("room", ["none", "64 KB"])
def test_a_run_that_died_on_a_full_redis_is_cleaned_by_the_next_one(full_redis, room):
    """A run dies holding the lock, its pending run filling Redis to the brim: the next run starts at once.

    With no room at all, taking the lock over is refused and the store deletes the dead run first;
    with 64 KB, the lock is taken and the memory check deletes it, then must measure again.
    """
    server, base = full_redis
    client = server.client()
    live, dead = client.get(KEYS.current), "20200101T000000Z-dead"
    subprocess.run([sys.executable, "-c", DIES_HOLDING_THE_LOCK, server.url, dead], check=True, timeout=60)
    assert client.exists(KEYS.lock) and client.exists(KEYS.user(dead, 1))
    used = client.info("memory")["used_memory"]  # the limit, set just below or above it:
    client.config_set("maxmemory", used - 2**16 if room == "none" else used + 2**16)
    again = invoke(*base, "run", *SMALL)
    assert again.exit_code == 0, again.output
    assert client.get(KEYS.current) != live and not client.exists(KEYS.user(dead, 1))
    assert client.zcard(KEYS.pending) == 0 and not client.exists(KEYS.lock)


def test_an_evicting_redis_is_refused_unless_allowed_and_then_served(tmp_path, small_dir):
    from lookup_api import create_app

    server = server_with(tmp_path, "--maxmemory", "5mb", "--maxmemory-policy", "allkeys-lru")
    try:
        base = ["--redis-url", server.url, "--data-dir", str(small_dir)]
        refused = invoke(*base, "run", *SMALL)
        assert refused.exit_code == 1 and "maxmemory-policy allkeys-lru" in refused.output
        assert "--allow-eviction" in refused.output and server.client().get(KEYS.current) is None
        allowed = invoke(*base, "run", *SMALL, "--allow-eviction")
        assert allowed.exit_code == 0, allowed.output
        app = create_app({"REDIS_URL": server.url, "TESTING": True, "LIST_CACHE_SIZE": 0})
        http = app.test_client()
        assert http.get("/recommendations/1").status_code == 200
        client = server.client()
        for i in range(2000):  # memory pressure: Redis evicts some of the run's keys
            client.set(f"other:{i}", b"y" * 2048)
        statuses, reasons = [], []
        for uid in range(1, 301):
            resp = http.get(f"/recommendations/{uid}")
            statuses.append(resp.status_code)
            reasons.append(resp.get_json().get("reason"))
        print(f"\nafter eviction: {reasons.count('missing')} of 300 users got the popular list (missing), "
              f"statuses {sorted(set(statuses))}, evicted keys {client.info('stats')['evicted_keys']}")
        assert statuses == [200] * 300, sorted(set(statuses))
        assert reasons.count("missing") > 0, "no list was evicted: more pressure needed"
        metrics = http.get("/metrics").get_data(as_text=True)
        counted = re.search(r'recsys_api_fallbacks_total\{reason="missing"\} (\S+)', metrics)
        assert float(counted.group(1)) == reasons.count("missing")
    finally:
        server.stop()


def test_a_one_line_ratings_file_is_refused_by_the_publish_gate(tmp_path, redis_url, prefix, small_dir,
                                                               client):
    base = ["--redis-url", redis_url, "--prefix", prefix]
    assert invoke(*base, "--data-dir", str(small_dir), "run", *SMALL).exit_code == 0
    store = RunStore(client, Keys(prefix))
    live = store.current()
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "movies.dat").write_bytes((small_dir / "movies.dat").read_bytes())
    (tiny / "ratings.dat").write_bytes(b"1::1::5::978300760\n")
    refused = invoke(*base, "--data-dir", str(tiny), "run", *SMALL)
    assert refused.exit_code == 1 and "refused by the publish gate" in refused.output, refused.output
    assert "1 users, under 50% of the live run" in refused.output and "empty list" in refused.output
    assert store.current() == live
    forced = invoke(*base, "--data-dir", str(tiny), "run", *SMALL, "--force")
    assert forced.exit_code == 0, forced.output
    assert "1 users, under 50%" in store.meta(store.current())["gate_forced"]
    from lookup_api import create_app

    http = create_app({"REDIS_URL": redis_url, "PREFIX": prefix, "TESTING": True}).test_client()
    doc = http.get("/recommendations/1").get_json()  # the forced run's empty list is never served
    assert doc["source"] == "popular" and doc["reason"] == "empty" and doc["items"]


def test_users_who_all_rated_one_movie_are_refused_even_as_the_first_run(tmp_path, redis_url, prefix, client):
    one = tmp_path / "one"
    one.mkdir()
    (one / "movies.dat").write_bytes(b"1::Only (1999)::Drama\n2::Other (2000)::Comedy\n")
    (one / "ratings.dat").write_bytes(b"".join(b"%d::1::4::97830%04d\n" % (u, u) for u in range(1, 501)))
    refused = invoke("--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(one), "run", *SMALL)
    assert refused.exit_code == 1 and "500 of 500 users have an empty list" in refused.output, refused.output
    assert RunStore(client, Keys(prefix)).current() is None


FAR = b"2147483648"  # MAX_ID + 1


@pytest.mark.parametrize(("ratings", "movies", "message"), [
    (b"2147483648::1::4::978300761\n", b"", "ratings.dat:2: user id 2147483648 is above 2147483647"),
    (b"18446744073709551616::1::4::978300761\n", b"", "ratings.dat:2: user id 18446744073709551616 is"),
    (b"2::2147483648::4::978300761\n", b"2147483648::Far (2001)::Drama\n", "movies.dat:121: movie id 2147"),
])
def test_ids_beyond_the_api_range_are_a_file_line_error(tmp_path, redis_url, prefix, small_dir, ratings,
                                                        movies, message):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "movies.dat").write_bytes((small_dir / "movies.dat").read_bytes() + movies)
    (bad / "ratings.dat").write_bytes(b"1::1::5::978300760\n" + ratings)
    result = invoke("--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(bad), "run", *SMALL)
    assert result.exit_code == 1 and message in result.output, result.output
    shown = invoke("--redis-url", redis_url, "--prefix", prefix, "show", FAR.decode())
    assert shown.exit_code == 2 and "2147483647" in shown.output


# ------------------------------------------------------------------------------------- SIGTERM
def svd_children(pid: int) -> list[int]:
    """The SVD child processes of ``pid`` (not multiprocessing's resource tracker)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    found = []
    for child in path.read_text().split() if path.exists() else []:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                found.append(int(child))
    return found


def test_sigterm_in_training_releases_the_lock_stops_the_svd_child_and_exits_143(
        redis_url, prefix, small_dir, client):
    base = ["--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(small_dir)]
    assert invoke(*base, "run", *SMALL).exit_code == 0
    live = client.get(Keys(prefix).current)
    cmd = [sys.executable, "-c", "from batch.cli import main; main()", *base, "run", *SMALL,
           "--svd-epochs", "500"]  # SVD (in its child process) takes seconds
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (client.exists(Keys(prefix).lock) and svd_children(proc.pid)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    child = svd_children(proc.pid)[0]
    time.sleep(1.0)  # the child is fitting SVD now
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    stopped = time.monotonic() - sent
    print(f"\nSIGTERM to exit: {stopped:.2f}s, exit {proc.returncode}")
    assert proc.returncode == 143, err[-2000:]
    assert "Terminated" in err and "Traceback" not in err
    assert client.get(Keys(prefix).lock) is None, "the lock is still held"
    assert not Path(f"/proc/{child}").exists(), "the SVD child outlived the run"
    assert client.get(Keys(prefix).current) == live
    again = invoke(*base, "run", *SMALL)  # at once, not after the lock's TTL
    assert again.exit_code == 0, again.output


def test_sigterm_mid_publish_leaves_current_and_the_next_run_cleans_up(redis_url, prefix, small_dir, client,
                                                                       monkeypatch):
    base = ["--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(small_dir)]
    assert invoke(*base, "run", *SMALL).exit_code == 0
    keys = Keys(prefix)
    live = client.get(keys.current)
    real = RunStore.write_index

    def sigterm_first(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # every list is written: the run is stopped mid-publish
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RunStore, "write_index", sigterm_first)
    stopped = invoke(*base, "run", *SMALL)
    monkeypatch.undo()
    assert stopped.exit_code == 143, stopped.output
    assert client.get(keys.current) == live and client.get(keys.lock) is None
    assert client.zcard(keys.pending) == 1  # its lists, for the next run to delete
    assert invoke(*base, "run", *SMALL).exit_code == 0
    assert client.zcard(keys.pending) == 0 and len(RunStore(client, keys).runs()) == 2
