"""The batch lock names its holder; a dead holder's lock is taken over or cleared (issue 22, item 4).

Holders are real processes: one that holds the lock and sleeps (alive), one that takes it and exits
without releasing it (dead, as after SIGKILL or an OOM kill), a holder on another host that stopped
renewing it, and a sharded run's lease left behind by a refused publish.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from batch.cli import cli
from batch.store import RunStore
from lookup_api.contract.keys import Keys
from tests.test_faults import SMALL

TAKE_LOCK = """
import os, sys, time, redis
from batch.store import RunStore
from lookup_api.contract.keys import Keys
store = RunStore(redis.Redis.from_url(sys.argv[1]), Keys(sys.argv[2]))
store.acquire(60)
print("locked", flush=True)
if sys.argv[3] == "exit":
    os._exit(0)  # dies holding the lock
time.sleep(120)
"""


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def base(redis_url, prefix, small_dir):
    return ["--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(small_dir)]


def holder(redis_url: str, prefix: str, how: str) -> subprocess.Popen:
    """A process that takes the lock, then exits (``exit``) or sleeps holding it (``sleep``)."""
    proc = subprocess.Popen([sys.executable, "-c", TAKE_LOCK, redis_url, prefix, how], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    if how == "exit":
        proc.wait(30)
    return proc


def test_a_live_holder_is_named_and_refused(base, redis_url, prefix, client):
    proc = holder(redis_url, prefix, "sleep")
    try:
        refused = invoke(*base, "run", *SMALL)
        assert refused.exit_code == 1
        assert f"(pid {proc.pid} on host " in refused.output and "last heartbeat" in refused.output
        assert "another batch run is in progress" in refused.output
        kept = invoke(*base, "unlock")
        assert kept.exit_code == 1 and "is alive; not cleared" in kept.output
        assert client.exists(Keys(prefix).lock)
        forced = invoke(*base, "unlock", "--force")
        assert forced.exit_code == 0 and f"pid {proc.pid}" in forced.output
        assert not client.exists(Keys(prefix).lock)
    finally:
        proc.kill()
        proc.wait(10)


def test_a_dead_holder_on_this_host_is_taken_over_at_once(base, redis_url, prefix, client):
    holder(redis_url, prefix, "exit")
    assert client.pttl(Keys(prefix).lock) > 50_000  # without the takeover: a wait of a minute
    started = time.monotonic()
    result = invoke(*base, "run", *SMALL)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 30
    assert RunStore(client, Keys(prefix)).current() is not None and not client.exists(Keys(prefix).lock)


def test_unlock_clears_a_dead_holder_and_says_when_there_is_none(base, redis_url, prefix, client):
    holder(redis_url, prefix, "exit")
    cleared = invoke(*base, "unlock")
    assert cleared.exit_code == 0 and "cleared the lock of `" in cleared.output, cleared.output
    assert not client.exists(Keys(prefix).lock)
    none = invoke(*base, "unlock")
    assert none.exit_code == 0 and "no batch lock is held" in none.output


def test_a_holder_elsewhere_that_stopped_renewing_is_reported_dead_and_unlock_clears_it(base, prefix,
                                                                                       client):
    from batch.holder import new_token

    doc = json.loads(new_token(60.0, command="recsys-batch run"))
    doc.update(host="batch-7f9c", pid=1, ns="another-boot/pid:[4026531836]")
    client.set(Keys(prefix).lock, json.dumps(doc), px=20_000)  # last renewed 40 s ago (ttl 60 s)
    refused = invoke(*base, "run", *SMALL)
    assert refused.exit_code == 1 and "on host batch-7f9c" in refused.output
    assert "looks dead (no heartbeat)" in refused.output and "recsys-batch unlock" in refused.output
    assert invoke(*base, "unlock").exit_code == 0 and not client.exists(Keys(prefix).lock)


def test_an_unknown_holder_needs_force(base, prefix, client):
    client.set(Keys(prefix).lock, "written-by-hand", ex=60)
    assert invoke(*base, "unlock").exit_code == 1
    assert invoke(*base, "unlock", "--force").exit_code == 0 and not client.exists(Keys(prefix).lock)


def test_a_lease_left_by_a_refused_publish_is_named_and_cleared(base, tmp_path, prefix, client):
    art = str(tmp_path / "artifacts")
    assert invoke(*base, "train", "--artifacts", art, "--top-n", "20").exit_code == 0
    assert invoke(*base, "score", "--artifacts", art, "--shard", "0/2").exit_code == 0
    refused = invoke(*base, "publish", "--artifacts", art, "--shards", "2")
    assert refused.exit_code == 1 and "have not finished" in refused.output
    client.pexpire(Keys(prefix).lock, 840_000)  # the lease, last renewed a minute ago
    blocked = invoke(*base, "run", *SMALL)
    assert blocked.exit_code == 1 and "the lease of a sharded run, taken by `" in blocked.output
    assert "between its steps" in blocked.output and "recsys-batch unlock" in blocked.output
    cleared = invoke(*base, "unlock")
    assert cleared.exit_code == 0 and "the lease of a sharded run" in cleared.output
    assert invoke(*base, "run", *SMALL).exit_code == 0


def test_a_repeated_publish_says_the_run_is_already_published(base, tmp_path, prefix, client):
    art = str(tmp_path / "artifacts")
    assert invoke(*base, "train", "--artifacts", art, "--top-n", "20").exit_code == 0
    assert invoke(*base, "score", "--artifacts", art, "--shard", "0/1").exit_code == 0
    first = invoke(*base, "publish", "--artifacts", art, "--shards", "1")
    assert first.exit_code == 0, first.output
    live = RunStore(client, Keys(prefix)).current()
    again = invoke(*base, "publish", "--artifacts", art, "--shards", "1")  # a retried Job, say
    assert again.exit_code == 0 and f"run {live} is already published; nothing to do" in again.output
    assert "no longer held" not in again.output and RunStore(client, Keys(prefix)).current() == live


def test_holder_liveness_sees_a_reused_pid(monkeypatch):
    """A pid reused by another process (another start time) is not the holder."""
    from batch.holder import Holder, new_token

    doc = json.loads(new_token(60.0))
    assert Holder.parse(json.dumps(doc), 59.0).state() == "live"  # this very process
    doc["start"] -= 1  # same pid, started at another time: a reused pid
    assert Holder.parse(json.dumps(doc), 59.0).state() == "dead"
    doc.update(pid=os.getpid(), start=None, ns=None, host="elsewhere")  # no namespace: judged by heartbeat
    assert Holder.parse(json.dumps(doc), 59.0).state() == "live"
    assert Holder.parse(json.dumps(doc), 10.0).state() == "dead"
