"""Read published lists from Redis, with the popular fallback (no Flask in here).

``Lookup.recommendations(user_id, n)`` decides *what* to serve; the HTTP layer only
validates and serialises.  Run contents are immutable once ``current`` points at them,
so a run's metadata, popular list and the user lists already read are cached in-process
for the live run as the stored JSON bytes (bounded by ``cache_size`` entries) and served
by slicing those bytes, never parsed and re-serialised; the live run id itself is cached for
``pointer_ttl`` seconds, so a response can lag a flip by at most that long.  If the
cached run has been retired between two reads, the lookup re-reads ``current`` and
retries: a response never mixes two runs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import redis

from lookup_api.contract.connection import UNAVAILABLE, text
from lookup_api.contract.items import PERSONALIZED, POPULAR, first_items
from lookup_api.contract.keys import Keys

log = logging.getLogger(__name__)


class NoLiveRun(Exception):
    """Redis answers but no run has been published yet."""


class StoreUnavailable(Exception):
    """Redis could not be reached and there is nothing cached to fall back on."""


@dataclass
class Result:
    """What to serve and where it came from; ``items_json`` is the JSON array, already sliced."""

    user_id: int | None
    source: str
    run_id: str
    generated_at: str | None
    items_json: bytes
    stale: bool = False


@dataclass
class _Run:
    run_id: str
    generated_at: str | None
    top_n: int
    popular: bytes  # the stored JSON, never re-serialised
    users: frozenset[int]  # the ids with a list

    def result(self, user_id: int | None, n: int, items: bytes | None = None, stale: bool = False) -> Result:
        """Return the first ``n`` of ``items`` (a user's stored list; None: the popular list)."""
        source, raw = (POPULAR, self.popular) if items is None else (PERSONALIZED, items)
        return Result(user_id, source, self.run_id, self.generated_at, first_items(raw, n), stale)


class Lookup:
    """Serve lists for one key prefix from an injected Redis client."""

    def __init__(self, client: redis.Redis, keys: Keys | None = None, pointer_ttl: float = 1.0,
                 cache_size: int = 20_000, retry_after: float = 1.0, max_age: float = 0.0):
        self.client, self.keys, self.pointer_ttl = client, keys or Keys(), pointer_ttl
        self.cache_size, self.retry_after, self.max_age = cache_size, retry_after, max_age
        self._down_until = 0.0  # after a failure, skip Redis until then (no request waits twice)
        self._pointer: tuple[str, float] | None = None  # (run id, read at)
        self._runs: dict[str, _Run] = {}
        self._last_good: _Run | None = None
        # (run id, that run's lists): swapped as one tuple, so threads never mix two runs' lists
        self._lists: tuple[str | None, dict[int, bytes]] = (None, {})

    def _current(self, refresh: bool = False) -> _Run:
        now = time.monotonic()
        if refresh or self._pointer is None or now - self._pointer[1] > self.pointer_ttl:
            run_id = text(self.client.get(self.keys.current))
            if run_id is None:
                raise NoLiveRun("no run has been published yet")
            self._pointer = (run_id, now)
        run_id = self._pointer[0]
        return self._runs.get(run_id) or self._load_run(run_id)

    def _load_run(self, run_id: str) -> _Run:
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.keys.meta(run_id), ["created_at", "top_n"])
        pipe.get(self.keys.popular(run_id))
        pipe.get(self.keys.users(run_id))
        (created, top_n), popular, users = pipe.execute()
        if popular is None or users is None:
            raise KeyError(run_id)  # retired under us
        run = _Run(run_id, text(created), int(top_n or 0) or len(json.loads(popular)), popular,
                   frozenset(json.loads(users)))
        self._runs = {run_id: run}  # keep only the live run's cache
        self._last_good = run
        return run

    def _with_run(self, read):
        """Call ``read(run)`` on the live run; on a retired run re-read ``current`` once.

        Returns None (serve the last known popular list, stale) while Redis is unavailable.  After
        a *timeout* Redis is not asked again for ``retry_after`` seconds, so a hung server costs one
        request a timeout, not every request; refused connections fail fast and are retried at once
        (on a cluster with one master down, lookups on the other masters keep working).
        """
        if time.monotonic() < self._down_until:
            if self._last_good is None:
                raise StoreUnavailable("Redis unavailable (retrying shortly)")
            return None
        try:
            for attempt in range(3):
                try:
                    run = self._current(refresh=attempt > 0)
                    return read(run)
                except KeyError:
                    log.info("run retired between reads; re-reading %s", self.keys.current)
                    self._runs.clear()
            raise StoreUnavailable("the live run keeps disappearing")
        except UNAVAILABLE as exc:
            if isinstance(exc, redis.TimeoutError):  # slow failures only: a refused connection is instant
                self._down_until = time.monotonic() + self.retry_after
            if self._last_good is None:
                raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from None
            log.warning("Redis unavailable (%s); serving last known popular list", type(exc).__name__)
            self._pointer = None
            return None

    def max_n(self) -> int:
        """Return the list length the live run published (the largest valid ``n``)."""
        run = self._with_run(lambda run: run)
        return (run or self._last_good).top_n

    def popular(self, n: int) -> Result:
        """Return the live run's popular list."""
        return self._with_run(lambda run: run.result(None, n)) or self._stale(None, n)

    def recommendations(self, user_id: int, n: int) -> Result:
        """Return the user's list, or the popular list when the run has none for them."""

        def read(run: _Run) -> Result:
            if user_id not in run.users:  # unknown user: no round trip at all
                return run.result(user_id, n)
            cached_run, lists = self._lists
            if cached_run != run.run_id:
                lists = {}
                self._lists = (run.run_id, lists)
            items = lists.get(user_id)
            if items is None:
                items = self.client.get(self.keys.user(run.run_id, user_id))  # one round trip
                if items is None:  # a known user's list is gone: the run was retired
                    raise KeyError(run.run_id)  # retry on the new live run
                if self.cache_size:  # bytes: cheap to keep, invisible to the garbage collector
                    if len(lists) >= self.cache_size:
                        lists.clear()
                    lists[user_id] = items
            return run.result(user_id, n, items)

        return self._with_run(read) or self._stale(user_id, n)

    def _stale(self, user_id: int | None, n: int) -> Result:
        return self._last_good.result(user_id, n, stale=True)

    def ready(self) -> tuple[bool, str]:
        """Return (ready, reason): Redis answers, a live run with its keys exists (and, with ``max_age``
        > 0, it was created at most ``max_age`` seconds ago)."""
        try:
            self.client.ping()
            run = self._current(refresh=True)
            if self.max_age > 0:
                created = self.client.hget(self.keys.meta(run.run_id), "created_ts")
                age = None if created is None else time.time() - float(created)
                if age is not None and age > self.max_age:
                    return False, (f"live run {run.run_id} is {age:.0f}s old "
                                   f"(RECSYS_MAX_RUN_AGE={self.max_age:.0f})")
            return True, f"live run {run.run_id}"
        except NoLiveRun as exc:
            return False, str(exc)
        except KeyError as exc:
            return False, f"live run {exc.args[0]} has no popular list or user index"
        except UNAVAILABLE as exc:
            return False, f"Redis unavailable: {type(exc).__name__}"
