"""Publish runs to Redis atomically, and read, roll back and retire them.

The only batch module that talks to Redis.  Order of a publish (gorse-style):
register the run as pending -> write every user list, the popular list and the
user-id index in pipelined chunks -> write metadata -> add to the run history -> flip ``current``
(one SET, the only moment readers switch) -> retire runs beyond the last ``keep``.
A run that dies before the flip leaves ``current`` untouched; its keys stay listed
as pending and are deleted by the next run.
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
from dataclasses import dataclass

import redis

from lookup_api.contract.connection import UNAVAILABLE, redact_url
from lookup_api.contract.keys import DEFAULT_KEEP, Keys, decode_items

log = logging.getLogger(__name__)

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


class StoreError(Exception):
    """Redis is unreachable, or the requested run state is impossible (one-line message)."""


class LockedError(StoreError):
    """Another batch run holds the publish lock."""


@dataclass
class PublishReport:
    run_id: str
    users: int
    seconds: float
    retired: list[str]


def _text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


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

    # -- reading ---------------------------------------------------------------------------------
    def current(self) -> str | None:
        """Return the live run id, or None before the first publish."""
        return _text(self.client.get(self.keys.current))

    def runs(self) -> list[tuple[str, float]]:
        """Return complete runs as ``(run_id, created_at)``, newest first."""
        return [(_text(r), s) for r, s in self.client.zrevrange(self.keys.runs, 0, -1, withscores=True)]

    def meta(self, run_id: str) -> dict[str, str]:
        """Return a run's metadata hash (empty when the run does not exist)."""
        return {_text(k): _text(v) for k, v in self.client.hgetall(self.keys.meta(run_id)).items()}

    def user_list(self, run_id: str, user_id: int) -> list[dict] | None:
        """Return a user's published list in ``run_id``, or None."""
        raw = self.client.get(self.keys.user(run_id, user_id))
        return None if raw is None else decode_items(raw)

    def popular_list(self, run_id: str) -> list[dict] | None:
        """Return the run's popular list, or None."""
        raw = self.client.get(self.keys.popular(run_id))
        return None if raw is None else decode_items(raw)

    # -- locking ---------------------------------------------------------------------------------
    @contextmanager
    def lock(self, ttl: float = 60.0) -> Iterator[str]:
        """Hold the publish lock for one run.

        The lock expires ``ttl`` seconds after its last heartbeat (sent every ``ttl / 3``
        by a daemon thread), so a crashed or killed run blocks the next one for at most ``ttl``.
        """
        token = self.acquire(ttl)
        ttl_ms = max(int(ttl * 1000), 1)
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(ttl / 3):
                try:
                    if not self.client.eval(_RENEW, 1, self.keys.lock, token, ttl_ms):
                        log.warning("lost the batch lock %s; this run will not publish", self.keys.lock)
                        return
                except (redis.RedisError, *UNAVAILABLE) as exc:
                    log.warning("lock heartbeat failed (%s); retrying", type(exc).__name__)

        beat = threading.Thread(target=heartbeat, name="recsys-lock-heartbeat", daemon=True)
        beat.start()
        try:
            yield token
        finally:
            stop.set()
            beat.join()
            try:
                self.release(token)
            except (redis.RedisError, *UNAVAILABLE):
                log.warning("could not release %s; it expires within %.0fs", self.keys.lock, ttl)

    def acquire(self, ttl: float) -> str:
        """Take the lock for ``ttl`` seconds (no heartbeat); return its token or raise LockedError."""
        token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        if not self.client.set(self.keys.lock, token, nx=True, px=max(int(ttl * 1000), 1)):
            holder = _text(self.client.get(self.keys.lock)) or "?"
            left = max(self.client.pttl(self.keys.lock), 0) / 1000
            raise LockedError(
                f"another batch run holds the lock {self.keys.lock} ({holder}, expires in {left:.0f}s "
                "unless renewed); not starting a second one"
            )
        return token

    def holds(self, token: str) -> bool:
        """Return True while ``token`` still holds the lock."""
        return _text(self.client.get(self.keys.lock)) == token

    def release(self, token: str) -> None:
        """Release the lock if ``token`` still holds it."""
        self.client.eval(_RELEASE, 1, self.keys.lock, token)

    # -- writing ---------------------------------------------------------------------------------
    def write_lists(self, run_id: str, lists: Iterable[tuple[int, bytes]]) -> list[int]:
        """Register ``run_id`` as pending and write user lists in pipelined chunks; return their ids."""
        self.client.zadd(self.keys.pending, {run_id: time.time()}, nx=True)
        user_ids: list[int] = []
        pipe = self.client.pipeline(transaction=False)
        for user_id, payload in lists:
            pipe.set(self.keys.user(run_id, user_id), payload)
            user_ids.append(int(user_id))
            if len(user_ids) % self.chunk == 0:
                pipe.execute()
        pipe.execute()
        return user_ids

    def mark_shard(self, run_id: str, shard: int, users: int) -> None:
        """Record that shard ``shard`` of ``run_id`` wrote all its ``users`` lists."""
        self.client.hset(self.keys.shards(run_id), str(shard), str(users))

    def shards_done(self, run_id: str) -> dict[int, int]:
        """Return ``{shard: users written}`` for the shards of ``run_id`` that completed."""
        return {int(k): int(v) for k, v in self.client.hgetall(self.keys.shards(run_id)).items()}

    def finalize(
        self, run_id: str, popular: bytes, user_ids: list[int], meta: dict, keep: int = DEFAULT_KEEP,
        token: str | None = None,
    ) -> list[str]:
        """Write the popular list, user index and metadata, flip ``current``, retire old runs.

        With ``token``, refuse (StoreError, ``current`` untouched) unless that lock is still held:
        a run whose lock expired must not flip, nor retire a newer run's pending keys.
        """
        if keep < 1:
            raise StoreError("keep must be at least 1")
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.popular(run_id), popular)
        pipe.set(self.keys.users(run_id), json.dumps(sorted(user_ids), separators=(",", ":")))
        pipe.execute()
        created = float(meta.get("created_ts", time.time()))
        flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
        flat.update(status="complete", users=str(len(user_ids)))
        self.client.hset(self.keys.meta(run_id), mapping=flat)
        self.client.zadd(self.keys.runs, {run_id: created})
        if token is not None and not self.holds(token):
            raise StoreError(f"run {run_id} lost the batch lock before publishing (expired or taken by "
                             "another run); current was not moved")
        previous = _text(self.client.set(self.keys.current, run_id, get=True))  # the atomic flip
        self.client.zrem(self.keys.pending, run_id)
        log.info("published run %s: %s user lists, current flipped (was %s)", run_id, len(user_ids), previous)
        return self.retire(keep, previous=previous)

    def publish(
        self,
        run_id: str,
        lists: Iterable[tuple[int, bytes]],
        popular: bytes,
        meta: dict,
        keep: int = DEFAULT_KEEP,
        token: str | None = None,
    ) -> PublishReport:
        """Write a complete run, then flip ``current`` to it (if ``token`` still holds the lock)."""
        if keep < 1:
            raise StoreError("keep must be at least 1")
        started = time.perf_counter()
        user_ids = self.write_lists(run_id, lists)
        retired = self.finalize(run_id, popular, user_ids, meta, keep, token=token)
        return PublishReport(run_id, len(user_ids), time.perf_counter() - started, retired)

    def delete_run(self, run_id: str) -> int:
        """Delete every key of ``run_id`` (pipelined single-key UNLINKs); return how many.

        The popular list and user index go first, so a reader that meets a half-deleted run sees
        it gone (and retries on the live one) rather than a known user without a list.
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

    def retire(self, keep: int = DEFAULT_KEEP, previous: str | None = None) -> list[str]:
        """Delete complete runs beyond ``keep``, and the orphans of failed runs.

        Kept, in order of preference: the live run, ``previous`` (the run live just before the
        flip: readers may still be on it), then the newest runs — runs that were rolled back
        *from* come last, so a bad run never outlives the good one it was rolled back to.
        """
        live = self.current()
        history = [r for r, _ in self.runs()]
        bad = {r for r in history if self.client.hexists(self.keys.meta(r), "rolled_back_at")}
        order = [live, previous, *[r for r in history if r not in bad], *[r for r in history if r in bad]]
        keepers = [r for r in dict.fromkeys(order) if r in history][:keep]
        old = [r for r in history if r not in keepers and r != live]
        orphans = [_text(r) for r in self.client.zrange(self.keys.pending, 0, -1)]
        for run_id in old + orphans:
            n = self.delete_run(run_id)
            log.info("retired run %s (%s keys)", run_id, n)
        return old + orphans

    def rollback(self, run_id: str | None = None) -> str:
        """Point ``current`` at ``run_id`` (default: the newest complete run older than the live one).

        Takes the batch lock (refused while a run is publishing) and marks the run rolled back
        from, so neither the default rollback nor retirement prefers it again.
        """
        with self.lock(ttl=30):
            live = self.current()
            history = [r for r, _ in self.runs()]
            if run_id is None:
                older = history[history.index(live) + 1 :] if live in history else history
                older = [r for r in older if not self.client.hexists(self.keys.meta(r), "rolled_back_at")]
                if not older:
                    raise StoreError("no earlier complete run to roll back to")
                run_id = older[0]
            if run_id not in history or self.meta(run_id).get("status") != "complete":
                known = ", ".join(history) or "none"
                raise StoreError(f"run {run_id} is unknown or was deleted; complete runs: {known}")
            if live and live != run_id and live in history:
                self.client.hset(self.keys.meta(live), "rolled_back_at", f"{time.time():.3f}")
            self.client.hdel(self.keys.meta(run_id), "rolled_back_at")
            self.client.set(self.keys.current, run_id)
        log.info("rolled back: current %s -> %s", live, run_id)
        return run_id
