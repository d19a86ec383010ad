"""Runs in Redis one step at a time: read, lock, write, flip, delete (the only batch module on redis).

The order of the steps is :mod:`batch.lifecycle`'s.  The lock shares ``current``'s Cluster slot
(:attr:`Keys.lock`), so :meth:`RunStore.flip` checks it and moves ``current`` in one Lua script.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice

import redis

from lookup_api.contract.connection import UNAVAILABLE, connect, explain, redact_url, text
from lookup_api.contract.items import decode_items
from lookup_api.contract.keys import Keys

log = logging.getLogger(__name__)

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0")
_FLIP = ("if redis.call('get', KEYS[1]) ~= ARGV[1] then return {0} end "
         "return {1, redis.call('set', KEYS[2], ARGV[2], 'GET')}")


class StoreError(Exception):
    """Redis is unreachable, or the requested run state is impossible (one-line message)."""


class LockedError(StoreError):
    """Another batch run holds the publish lock."""


class LostLockError(StoreError):
    """This run's lock expired or was taken by another run: it must not write or flip."""


@contextmanager
def redis_errors(url: str | None = None) -> Iterator[None]:
    """Turn redis-py connection failures into :class:`StoreError` (password-free)."""
    try:
        yield
    except (redis.AuthenticationError, redis.AuthenticationWrongNumberOfArgsError):
        raise StoreError(f"Redis at {redact_url(url)} rejected the credentials") from None
    except UNAVAILABLE as exc:
        raise StoreError(f"Redis at {redact_url(url)} is unavailable: {type(exc).__name__}") from None
    except redis.ResponseError as exc:
        raise StoreError(f"Redis error: {exc}") from None


class RunStore:
    """Versioned runs under one key prefix on one Redis client (injected)."""

    CHUNK = 1000  # commands per pipeline round trip

    def __init__(self, client: redis.Redis, keys: Keys | None = None, chunk: int | None = None):
        self.client, self.keys, self.chunk = client, keys or Keys(), chunk or self.CHUNK

    @classmethod
    def open(cls, url: str | None, keys: Keys, *, create: bool = True) -> RunStore:
        """Connect to ``url`` (None: the embedded server) and ping it; StoreError says what failed."""
        try:
            client = connect(url, create=create)
            client.ping()
        except (redis.RedisError, *UNAVAILABLE) as exc:
            raise StoreError(f"cannot reach Redis at {redact_url(url)}: {explain(exc)}") from None
        return cls(client, keys)

    def current(self) -> str | None:
        """Return the live run id, or None before the first publish."""
        return text(self.client.get(self.keys.current))

    def runs(self) -> list[tuple[str, float]]:
        """Return complete runs as ``(run_id, created_at)``, newest first."""
        return [(text(r), s) for r, s in self.client.zrevrange(self.keys.runs, 0, -1, withscores=True)]

    def pending(self) -> list[str]:
        """Return the runs being written, or left behind by a failed run or a cut-short deletion."""
        return [text(r) for r in self.client.zrange(self.keys.pending, 0, -1)]

    def set_timings(self, run_id: str, timings: dict[str, float]) -> None:
        """Replace ``run_id``'s stage timings in its meta (publish and total are known after the flip)."""
        if self.client.exists(self.keys.meta(run_id)):
            self.client.hset(self.keys.meta(run_id), "timings",
                             json.dumps({k: round(v, 3) for k, v in timings.items()}))

    def meta(self, run_id: str) -> dict[str, str]:
        """Return a run's metadata hash (empty when the run does not exist)."""
        return {text(k): text(v) for k, v in self.client.hgetall(self.keys.meta(run_id)).items()}

    def user_list(self, run_id: str, user_id: int) -> list[dict] | None:
        """Return a user's published list in ``run_id``, or None."""
        raw = self.client.get(self.keys.user(run_id, user_id))
        return None if raw is None else decode_items(raw)

    def popular_list(self, run_id: str) -> list[dict] | None:
        """Return the run's popular list, or None."""
        raw = self.client.get(self.keys.popular(run_id))
        return None if raw is None else decode_items(raw)

    @contextmanager
    def lock(self, ttl: float = 60.0, token: str | None = None, keep: bool = False) -> Iterator[str]:
        """Hold the batch lock, renewed every ``ttl / 3`` s by a heartbeat thread; yield its token.

        ``token``: adopt a lock taken earlier (a sharded run's lease), refused if it was lost.
        At exit the lock is released, unless ``keep`` (renewed for ``ttl`` instead, for the next
        step of a sharded run); on an error a lock taken here is always released.
        """
        acquired, stop, failed = token is None, threading.Event(), True
        token = self.acquire(ttl) if acquired else token
        if not acquired:
            self.renew(token, ttl)

        def heartbeat() -> None:
            while not stop.wait(ttl / 3):
                try:
                    self.renew(token, ttl)
                except LostLockError:
                    return log.warning("lost the batch lock %s; this run will not publish", self.keys.lock)
                except (redis.RedisError, *UNAVAILABLE) as exc:
                    log.warning("lock heartbeat failed (%s); retrying", type(exc).__name__)

        beat = threading.Thread(target=heartbeat, name="recsys-lock-heartbeat", daemon=True)
        beat.start()
        try:
            yield token
            failed = False
        finally:
            stop.set()
            beat.join()
            try:  # an adopted lease that failed stays for a retry of the step (and expires by itself)
                if keep and not failed:
                    self.renew(token, ttl)
                elif acquired or not failed:
                    self.release(token)
            except (redis.RedisError, *UNAVAILABLE, LostLockError):
                log.warning("could not release or renew %s; it expires within %.0fs", self.keys.lock, ttl)

    def acquire(self, ttl: float) -> str:
        """Take the lock for ``ttl`` seconds (no heartbeat); return its token or raise LockedError."""
        token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        if not self.client.set(self.keys.lock, token, nx=True, px=max(int(ttl * 1000), 1)):
            holder = text(self.client.get(self.keys.lock)) or "?"
            left = max(self.client.pttl(self.keys.lock), 0) / 1000
            raise LockedError(f"another batch run holds the lock {self.keys.lock} ({holder}, expires in "
                              f"{left:.0f}s unless renewed); not starting a second one")
        return token

    def renew(self, token: str, ttl: float) -> None:
        """Extend the lock ``token`` holds to ``ttl`` seconds from now, or raise LostLockError."""
        if not self.client.eval(_RENEW, 1, self.keys.lock, token, max(int(ttl * 1000), 1)):
            raise LostLockError(f"the batch lock {self.keys.lock} is no longer held by {token} "
                                "(expired or taken by another run)")

    def holds(self, token: str) -> bool:
        """Return True while ``token`` still holds the lock."""
        return text(self.client.get(self.keys.lock)) == token

    def release(self, token: str) -> None:
        """Release the lock if ``token`` still holds it."""
        self.client.eval(_RELEASE, 1, self.keys.lock, token)

    def write_lists(self, run_id: str, lists: Iterable[tuple[int, bytes]], token: str) -> list[int]:
        """Write user lists in pipelined chunks under ``run_id`` (registered pending); return their ids.

        Each chunk's round trip also reads the lock: once it is not ``token``'s, LostLockError.
        """
        user_ids: list[int] = []
        lists = iter(lists)
        while chunk := list(islice(lists, self.chunk)):
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.keys.lock)
            pipe.zadd(self.keys.pending, {run_id: time.time()}, nx=True)
            for user_id, payload in chunk:
                pipe.set(self.keys.user(run_id, user_id), payload)
                user_ids.append(int(user_id))
            if text(pipe.execute()[0]) != token:
                raise LostLockError(f"run {run_id} lost the batch lock while writing (expired or taken by "
                                    "another run); stopped, current was not moved")
        return user_ids

    def write_index(self, run_id: str, popular: bytes, user_ids: list[int], meta: dict) -> None:
        """Write the popular list, the user index and the metadata (``status=pending``)."""
        flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.pending, {run_id: time.time()}, nx=True)
        pipe.set(self.keys.popular(run_id), popular)
        pipe.set(self.keys.users(run_id), json.dumps(sorted(user_ids), separators=(",", ":")))
        pipe.hset(self.keys.meta(run_id), mapping={**flat, "status": "pending", "users": str(len(user_ids))})
        pipe.execute()

    def mark_complete(self, run_id: str, created: float) -> None:
        """Mark ``run_id`` complete and add it to the run history."""
        self.client.hset(self.keys.meta(run_id), "status", "complete")
        self.client.zadd(self.keys.runs, {run_id: created})

    def unmark(self, run_id: str) -> None:
        """Take ``run_id`` out of the history again (its flip was refused) and list it pending."""
        self.client.zadd(self.keys.pending, {run_id: time.time()}, nx=True)
        self.client.zrem(self.keys.runs, run_id)
        self.client.hset(self.keys.meta(run_id), "status", "abandoned")

    def flip(self, run_id: str, token: str) -> str | None:
        """Point ``current`` at ``run_id`` if ``token`` holds the lock (one script); return the previous."""
        done, *previous = self.client.eval(_FLIP, 2, self.keys.lock, self.keys.current, token, run_id)
        if not done:
            raise LostLockError(f"run {run_id} lost the batch lock before publishing (expired or taken by "
                                "another run); current was not moved")
        return text(previous[0]) if previous else None

    def unpend(self, run_id: str) -> None:
        """Remove ``run_id`` from the pending runs (it is live or listed complete)."""
        self.client.zrem(self.keys.pending, run_id)

    def mark_shard(self, run_id: str, shard: int, users: int) -> None:
        """Record that shard ``shard`` of ``run_id`` wrote all its ``users`` lists."""
        self.client.hset(self.keys.shards(run_id), str(shard), str(users))

    def shards_done(self, run_id: str) -> dict[int, int]:
        """Return ``{shard: users written}`` for the shards of ``run_id`` that completed."""
        return {int(k): int(v) for k, v in self.client.hgetall(self.keys.shards(run_id)).items()}

    def delete_run(self, run_id: str) -> int:
        """Delete every key of ``run_id`` (pipelined single-key UNLINKs); return how many.

        The history entry, popular list and user index go first, so a reader that meets a
        half-deleted run sees it gone (and retries on the live one), and rollback refuses it.
        """
        self.client.zrem(self.keys.runs, run_id)
        first = [self.keys.popular(run_id), self.keys.users(run_id), self.keys.meta(run_id)]
        deleted = sum(self.client.unlink(key) for key in first)
        pipe = self.client.pipeline(transaction=False)
        for key in self.client.scan_iter(match=self.keys.run_pattern(run_id), count=1000):
            pipe.unlink(key)
            deleted += 1
            if deleted % self.chunk == 0:
                pipe.execute()
        pipe.execute()
        self.client.zrem(self.keys.pending, run_id)
        return deleted
