"""Runs in Redis one step at a time: read, lock, write, flip, delete (the only batch module on redis).

The order of the steps is :mod:`batch.lifecycle`'s.  The lock shares ``current``'s Cluster slot
(:attr:`Keys.lock`), so :meth:`RunStore.flip` checks it and moves ``current`` in one Lua script.
Its value names the holder (:mod:`batch.holder`).  Deletes work on a full Redis (``noeviction``
refuses only writes that grow it), so a run that failed for lack of memory can always be cleaned.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice

import redis

from batch.holder import Holder, beat_interval, locked_message, new_token
from lookup_api.contract.connection import UNAVAILABLE, connect, explain, redact_url, text
from lookup_api.contract.errors import RecsysError
from lookup_api.contract.keys import Keys
from lookup_api.contract.meta import ABANDONED, COMPLETE, PENDING, RunMeta, field_value
from lookup_api.contract.reader import RunReader, Served, parse_n

log = logging.getLogger(__name__)

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0")
_TAKEOVER = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
             "return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) end return false")
_FLIP = ("if redis.call('get', KEYS[1]) ~= ARGV[1] then return {0} end "
         "return {1, redis.call('set', KEYS[2], ARGV[2], 'GET')}")


class StoreError(RecsysError):
    """Redis is unreachable, or the requested run state is impossible (one-line message)."""


class LockedError(StoreError):
    """Another batch run holds the publish lock."""


class LostLockError(StoreError):
    """This run's lock expired or was taken by another run: it must not write or flip."""


class FullError(StoreError):
    """Redis has no room for the run: found before writing, or a write was refused (out of memory)."""


class RefusedN(ValueError):
    """``n`` breaks the serving rule (:func:`~lookup_api.contract.reader.parse_n`): the API answers 400."""


def mib(n: float) -> str:
    """Return a byte count as ``12.3 MiB``."""
    return f"{n / 2**20:.1f} MiB"


@contextmanager
def redis_errors(url: str | None = None) -> Iterator[None]:
    """Turn redis-py connection failures into :class:`StoreError` (password-free)."""
    try:
        yield
    except (redis.AuthenticationError, redis.AuthenticationWrongNumberOfArgsError):
        raise StoreError(f"Redis at {redact_url(url)} rejected the credentials") from None
    except redis.OutOfMemoryError as exc:
        raise StoreError(f"Redis is out of memory ({exc}); current was not moved, and the next run "
                         "deletes what this one wrote") from None
    except UNAVAILABLE as exc:
        raise StoreError(f"Redis at {redact_url(url)} is unavailable: {type(exc).__name__}") from None
    except redis.ResponseError as exc:
        raise StoreError(f"Redis error: {exc}") from None


class RunStore(RunReader):
    """Versioned runs under one key prefix on one Redis client (injected): the contract's
    :class:`~lookup_api.contract.reader.RunReader` plus every write of the batch."""

    CHUNK = 1000  # commands per pipeline round trip

    def __init__(self, client: redis.Redis, keys: Keys | None = None, chunk: int | None = None):
        super().__init__(client, keys)
        self.chunk = chunk or self.CHUNK

    @classmethod
    def open(cls, url: str | None, keys: Keys, *, create: bool = True) -> RunStore:
        """Connect to ``url`` (None: the embedded server) and ping it; StoreError says what failed."""
        try:
            client = connect(url, create=create)
            client.ping()
        except (redis.RedisError, *UNAVAILABLE) as exc:
            raise StoreError(f"cannot reach Redis at {redact_url(url)}: {explain(exc)}") from None
        return cls(client, keys)

    def set_timings(self, run_id: str, timings: dict[str, float]) -> None:
        """Replace ``run_id``'s stage timings in its meta (publish and total are known after the flip)."""
        if self.client.exists(self.keys.meta(run_id)):
            self.set_meta(run_id, timings={k: round(v, 3) for k, v in timings.items()})

    def popular_list(self, run_id: str) -> list[dict] | None:
        """Return the run's popular list, or None (:meth:`RunReader.popular`)."""
        return self.popular(run_id)

    def set_meta(self, run_id: str, **fields) -> None:
        """Set single meta fields of ``run_id`` (typed values, :class:`RunMeta`'s names)."""
        self.client.hset(self.keys.meta(run_id), mapping={k: field_value(k, v) for k, v in fields.items()})

    def drop_meta(self, run_id: str, *names: str) -> None:
        """Delete meta fields of ``run_id`` (:class:`RunMeta`'s names)."""
        for name in names:
            field_value(name, "")  # KeyError for a field RunMeta does not declare
        self.client.hdel(self.keys.meta(run_id), *names)

    def has_meta(self, run_id: str, name: str) -> bool:
        """Return whether ``run_id``'s meta holds the field ``name``."""
        field_value(name, "")
        return bool(self.client.hexists(self.keys.meta(run_id), name))

    def run_state(self, run_id: str) -> tuple[RunMeta | None, bool, frozenset[int] | None]:
        """Return a run's meta, whether its popular list exists, and its user index (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.meta(run_id))
        pipe.exists(self.keys.popular(run_id))
        pipe.get(self.keys.users(run_id))
        meta, popular, users = pipe.execute()
        return (RunMeta.from_hash(meta) if meta else None, bool(popular),
                None if users is None else frozenset(json.loads(users)))

    def count_missing(self, keys: list[str]) -> int:
        """Return how many of ``keys`` do not exist (pipelined single-key EXISTS, chunked)."""
        absent = 0
        for start in range(0, len(keys), self.chunk):
            pipe = self.client.pipeline(transaction=False)
            for key in keys[start : start + self.chunk]:
                pipe.exists(key)
            absent += pipe.execute().count(0)
        return absent

    def show(self, user_id: int, n: str | None, exclude: frozenset[int]) -> Served:
        """Return what the API serves ``user_id`` from the live run (``recsys-batch show``), ``n`` as
        ``?n=`` (RefusedN says why not); StoreError: nothing is published, or the live run is gone."""
        live = self.current()
        if live is None:
            raise StoreError("no run has been published yet (run `recsys-batch run`)")
        gone = StoreError(f"the live run {live} has no keys (deleted?); see `recsys-batch status`")
        top_n = (self.meta(live) or RunMeta()).top_n or len(self.popular(live) or [])
        if not top_n:
            raise gone
        try:
            count = parse_n(n, top_n)
        except ValueError as exc:
            raise RefusedN(str(exc)) from None
        try:
            return self.served(user_id, count, exclude, run_id=live)
        except LookupError:
            raise gone from None

    def hide(self, movie_ids: Iterable[int], reason: str | None = None) -> int:
        """Hide titles (``<prefix>:hidden``, no run): the API drops them within its hidden TTL."""
        from lookup_api.contract.reader import hidden_entry

        entry = hidden_entry(reason)
        ids = [int(m) for m in movie_ids]
        return int(self.client.hset(self.keys.hidden, mapping={str(m): entry for m in ids})) if ids else 0

    def unhide(self, movie_ids: Iterable[int]) -> int:
        """Serve hidden titles again; return how many were hidden."""
        ids = [str(int(m)) for m in movie_ids]
        return int(self.client.hdel(self.keys.hidden, *ids)) if ids else 0

    @contextmanager
    def lock(self, ttl: float = 60.0, token: str | None = None, keep: bool = False,
             lease: bool = False) -> Iterator[str]:
        """Hold the batch lock, renewed by a heartbeat thread (:func:`batch.holder.beat_interval`); yield it.

        ``token``: adopt a lock taken earlier (a sharded run's lease), refused if it was lost.
        At exit the lock is released, unless ``keep`` (renewed for ``ttl`` instead, for the next
        step of a sharded run); on an error a lock taken here is always released.  ``lease``: the
        lock is taken as a sharded run's lease (held between steps, never taken over as dead).
        """
        acquired, stop, failed = token is None, threading.Event(), True
        token = self.acquire(ttl, lease=lease) if acquired else token
        if not acquired:
            self.renew(token, ttl)

        def heartbeat() -> None:
            while not stop.wait(beat_interval(ttl)):
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

    def holder(self) -> Holder | None:
        """Return who holds the batch lock (None: nobody)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.lock)
        pipe.pttl(self.keys.lock)
        raw, left = pipe.execute()
        return None if raw is None else Holder.parse(text(raw), max(left, 0) / 1000)

    def acquire(self, ttl: float, *, lease: bool = False) -> str:
        """Take the lock for ``ttl`` seconds (no heartbeat); return its token or raise LockedError.

        A lock whose holder was on this host and is gone is taken over at once (compare-and-set:
        of two runs doing so, one wins).  On a full Redis, where setting the lock is refused, the
        pending runs and the lock of dead holders are deleted first (deletes work when full).
        """
        token, px, freed = new_token(ttl, lease=lease), max(int(ttl * 1000), 1), False
        for _ in range(5):
            try:
                if self.client.set(self.keys.lock, token, nx=True, px=px):
                    return token
            except redis.OutOfMemoryError:
                if freed:
                    raise StoreError(self._full("even after deleting the pending runs")) from None
                self._free_for_lock()
                freed = True
                continue
            holder = self.holder()
            if holder is None:
                continue  # released meanwhile: try again
            if holder.state() != "dead" or holder.alive_here() is None:
                raise LockedError(locked_message(self.keys.lock, holder))
            if self.client.eval(_TAKEOVER, 1, self.keys.lock, holder.raw, token, px):
                log.warning("took over the batch lock from %s: that process is gone", holder.describe())
                return token
        raise LockedError(f"could not take the lock {self.keys.lock}: other runs keep taking it")

    def _free_for_lock(self) -> None:
        """On a full Redis: delete a dead holder's lock and the runs left pending (not a live holder's).

        The pending runs are read before the lock: a run that takes the lock after this reads it
        lists its own run pending after that, so it is not among those deleted.
        """
        pending, history, live = self.pending(), {r for r, _ in self.runs()}, self.current()
        holder = self.holder()
        if holder is not None:
            if holder.state() != "dead" or holder.alive_here() is None:
                raise LockedError(locked_message(self.keys.lock, holder))
            self.release(holder.raw)
        orphans = [r for r in pending if r not in history and r != live]
        for run_id in orphans:
            log.warning("Redis is full: deleted the pending run %s (%s keys) to take the lock", run_id,
                        self.delete_run(run_id))
        if not orphans:
            raise StoreError(self._full("and holds no pending run to delete"))

    def _full(self, detail: str) -> str:
        """Return the message for Redis refusing a write for lack of memory ``detail``."""
        used = ", ".join(f"used {mib(m['used'])} of maxmemory {mib(m['max'])}" for m in self.memory())
        return (f"Redis is out of memory ({used}) {detail}: raise maxmemory, or delete older runs "
                "(a lower --keep); current was not moved")

    def unlock(self, force: bool = False) -> Holder | None:
        """Delete the batch lock unless its holder is live (``force``: even then); return who held it."""
        holder = self.holder()
        if holder is None:
            return None
        if holder.state() == "live" and not force:
            raise LockedError(f"{holder.describe()} holds the lock {self.keys.lock} and is alive; not "
                              "cleared (--force clears it anyway: that run then stops before publishing)")
        if not self.client.eval(_RELEASE, 1, self.keys.lock, holder.raw):
            raise StoreError(f"the lock {self.keys.lock} changed hands meanwhile; run unlock again")
        log.warning("cleared the batch lock held by %s", holder.describe())
        return holder

    def renew(self, token: str, ttl: float) -> None:
        """Extend the lock ``token`` holds to ``ttl`` seconds from now, or raise LostLockError."""
        if not self.client.eval(_RENEW, 1, self.keys.lock, token, max(int(ttl * 1000), 1)):
            raise LostLockError(f"the batch lock {self.keys.lock} is no longer held by this run "
                                "(expired, cleared by `unlock`, or taken by another run)")

    def holds(self, token: str) -> bool:
        """Return True while ``token`` still holds the lock."""
        return text(self.client.get(self.keys.lock)) == token

    def release(self, token: str) -> None:
        """Release the lock if ``token`` still holds it."""
        self.client.eval(_RELEASE, 1, self.keys.lock, token)

    @contextmanager
    def _room(self, run_id: str) -> Iterator[None]:
        """Turn Redis refusing a write of ``run_id`` for lack of memory into FullError."""
        try:
            yield
        except redis.OutOfMemoryError:
            raise FullError(self._full(f"while writing run {run_id}")) from None

    def write_lists(self, run_id: str, lists: Iterable[tuple[int, bytes]], token: str) -> list[int]:
        """Write user lists in pipelined chunks under ``run_id`` (registered pending); return their ids.

        Each chunk's round trip also reads the lock: once it is not ``token``'s, LostLockError.
        """
        with self._room(run_id):
            return self._write_lists(run_id, lists, token)

    def _write_lists(self, run_id: str, lists: Iterable[tuple[int, bytes]], token: str) -> list[int]:
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

    def write_extra(self, run_id: str, lists: Iterable[tuple[str, bytes]], token: str) -> int:
        """Write a run's other lists (per-genre popular, "more like this") as ``(key, bytes)``
        pairs, pipelined like :meth:`write_lists`; return how many."""
        with self._room(run_id):
            written, lists = 0, iter(lists)
            while chunk := list(islice(lists, self.chunk)):
                pipe = self.client.pipeline(transaction=False)
                pipe.get(self.keys.lock)
                pipe.zadd(self.keys.pending, {run_id: time.time()}, nx=True)
                for key, payload in chunk:
                    if not key.startswith(self.keys.run_base(run_id) + ":"):
                        raise ValueError(f"{key} is not a key of run {run_id}")
                    pipe.set(key, payload)
                written += len(chunk)
                if text(pipe.execute()[0]) != token:
                    raise LostLockError(f"run {run_id} lost the batch lock while writing (expired or taken "
                                        "by another run); stopped, current was not moved")
        return written

    def write_index(self, run_id: str, popular: bytes, user_ids: list[int], meta: RunMeta | dict) -> None:
        """Write the popular list, the user index and the metadata (``status=pending``)."""
        meta = RunMeta.of(meta)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.pending, {run_id: time.time()}, nx=True)
        pipe.set(self.keys.popular(run_id), popular)
        pipe.set(self.keys.users(run_id), json.dumps(sorted(user_ids), separators=(",", ":")))
        pipe.hset(self.keys.meta(run_id), mapping=meta.with_(status=PENDING, users=len(user_ids)).to_hash())
        with self._room(run_id):
            pipe.execute()

    def mark_complete(self, run_id: str, created: float) -> None:
        """Mark ``run_id`` complete and add it to the run history."""
        with self._room(run_id):
            self.set_meta(run_id, status=COMPLETE)
            self.client.zadd(self.keys.runs, {run_id: created})

    def unmark(self, run_id: str) -> None:
        """Take ``run_id`` out of the history again (its flip was refused) and list it pending."""
        self.client.zadd(self.keys.pending, {run_id: time.time()}, nx=True)
        self.client.zrem(self.keys.runs, run_id)
        self.set_meta(run_id, status=ABANDONED)

    def flip(self, run_id: str, token: str) -> str | None:
        """Point ``current`` at ``run_id`` if ``token`` holds the lock (one script); return the previous."""
        with self._room(run_id):
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

        Listed pending first and unlisted last, so a deletion cut short is finished by the next
        run.  The history entry, popular list and user index go first, so a reader that meets a
        half-deleted run sees it gone (and retries on the live one), and rollback refuses it.
        """
        try:
            self.client.zadd(self.keys.pending, {run_id: time.time()}, nx=True)
        except redis.OutOfMemoryError:  # a failed run is listed already; deletes need no memory
            if self.client.zscore(self.keys.pending, run_id) is None:
                log.warning("Redis is full: deleting run %s without listing it pending first", run_id)
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

    def memory(self) -> list[dict]:
        """Return each master's ``used`` and ``max`` bytes (0: no limit) and eviction ``policy``."""
        if hasattr(self.client, "connection_pool"):
            infos = [self.client.info("memory")]
        else:  # a cluster: one reply per master (redis-py unwraps the reply of a single one)
            replies = self.client.info("memory", target_nodes=self.client.PRIMARIES)
            infos = [replies] if "used_memory" in replies else list(replies.values())
        return [{"used": int(i["used_memory"]), "max": int(i.get("maxmemory", 0)),
                 "policy": str(i.get("maxmemory_policy", "noeviction"))} for i in infos]

    def key_costs(self, run_id: str, sample: int = 64) -> tuple[float, float, float] | None:
        """Return ``run_id``'s mean MEMORY USAGE and mean length of a user list, and its other keys' usage.

        Measured on up to ``sample`` lists spread over the run's users (None: no index, or no
        list left to measure).
        """
        raw = self.client.get(self.keys.users(run_id))
        ids = json.loads(raw) if raw else []
        chosen = ids[:: max(len(ids) // sample, 1)][:sample]
        if not chosen:
            return None
        pipe = self.client.pipeline(transaction=False)
        for user_id in chosen:
            pipe.memory_usage(self.keys.user(run_id, user_id), samples=0)
            pipe.strlen(self.keys.user(run_id, user_id))
        for key in (self.keys.popular(run_id), self.keys.users(run_id), self.keys.meta(run_id)):
            pipe.memory_usage(key, samples=0)
        replies = pipe.execute()
        pairs = [(u, n) for u, n in zip(replies[: 2 * len(chosen) : 2], replies[1 : 2 * len(chosen) : 2],
                                        strict=True) if u]
        if not pairs:
            return None
        rest = sum(u or 0 for u in replies[2 * len(chosen):])
        return sum(u for u, _ in pairs) / len(pairs), sum(n for _, n in pairs) / len(pairs), float(rest)

    def list_lengths(self, run_id: str, user_ids: list[int]) -> tuple[list[int], list[int]]:
        """Return the users of ``run_id`` whose list is missing, and those whose list is empty."""
        absent, empty = [], []
        for start in range(0, len(user_ids), self.chunk):
            chunk = user_ids[start : start + self.chunk]
            pipe = self.client.pipeline(transaction=False)
            for user_id in chunk:
                pipe.strlen(self.keys.user(run_id, user_id))
            for user_id, length in zip(chunk, pipe.execute(), strict=True):
                if length <= len(b"[]"):
                    (empty if length else absent).append(user_id)
        return absent, empty
