"""Read published lists from Redis, with the popular fallback (no Flask in here).

``Lookup.recommendations(user_id, n)`` decides *what* to serve; the HTTP layer only
validates and serialises.  Run contents are immutable once ``current`` points at them,
so a run's metadata, popular list and the user lists already read are cached in-process
for the live run as the stored JSON bytes (bounded by ``cache_size`` entries) and served
by slicing those bytes, never parsed and re-serialised; the live run id itself is cached for
``pointer_ttl`` seconds, so a response can lag a flip by at most that long.  If the
cached run has been retired between two reads, the lookup re-reads ``current`` and
retries: a response never mixes two runs.

A key that should be there and is not (evicted, deleted by hand) is a fallback, never an
error: a user whose list is missing or empty gets the popular list (``reason`` says why), a
missing ``current`` leaves the run seen last in service (``stale``).  A Redis that times out
opens a :class:`Breaker`: answers are stale, without a Redis call, until a probe succeeds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from lookup_api.contract.connection import UNAVAILABLE, text
from lookup_api.contract.items import PERSONALIZED, POPULAR, first_items
from lookup_api.contract.keys import Keys

log = logging.getLogger(__name__)

# Why an answer is not the user's own list from the live run (a response's ``reason``)
MISSING, EMPTY, UNAVAILABLE_REASON, NO_CURRENT = "missing", "empty", "unavailable", "no-current"
REASONS = (MISSING, EMPTY, UNAVAILABLE_REASON, NO_CURRENT)


class NoLiveRun(Exception):
    """Redis answers but no run has been published yet."""


class StoreUnavailable(Exception):
    """Redis could not be reached and there is nothing cached to fall back on."""


class NoPopular(LookupError):
    """The live run's popular list is gone (evicted): the popular list seen last stands in."""


@dataclass
class Result:
    """What to serve and where it came from; ``items_json`` is the JSON array, already sliced."""

    user_id: int | None
    source: str
    run_id: str
    generated_at: str | None
    items_json: bytes
    stale: bool = False
    reason: str | None = None  # one of REASONS, or None for the ordinary answer


@dataclass
class _Run:
    run_id: str
    generated_at: str | None
    top_n: int
    popular: bytes | None  # the stored JSON, never re-serialised (None: the key is gone)
    users: frozenset[int] | None  # the ids with a list (None: the index is gone; ask for each user)

    def result(self, user_id: int | None, n: int, items: bytes | None = None, reason: str | None = None,
               stale: bool = False) -> Result:
        """Return the first ``n`` of ``items`` (a user's stored list; None: the popular list)."""
        source, raw = (POPULAR, self.popular) if items is None else (PERSONALIZED, items)
        if raw is None:
            raise NoPopular(self.run_id)
        return Result(user_id, source, self.run_id, self.generated_at, first_items(raw, n), stale, reason)


class Breaker:
    """After a Redis timeout, keep requests off Redis for a window, then let one probe through.

    The window starts at ``window`` seconds and doubles with each failed probe up to ``cap``; a
    success closes the breaker.  Thread-safe: while a probe is out, other requests stay off Redis.
    """

    def __init__(self, window: float = 1.0, cap: float = 4.0):
        self.window, self.cap = window, max(cap, window)
        self._lock = threading.Lock()
        self._until = 0.0  # monotonic time the breaker stays open until (0: closed)
        self._delay = window
        self._probing = False

    def allow(self) -> bool:
        """Return whether this call may ask Redis now (closed, or the probe of an open breaker)."""
        if not self._until:
            return True
        with self._lock:
            if self._probing or time.monotonic() < self._until:
                return False
            self._probing = True
            return True

    def success(self) -> None:
        """Redis answered: close the breaker."""
        if self._until:
            with self._lock:
                self._until, self._delay, self._probing = 0.0, self.window, False

    def failure(self, exc: BaseException) -> None:
        """Redis failed: open the breaker on a timeout (a refused connection fails fast: no need)."""
        with self._lock:
            if isinstance(exc, redis.TimeoutError) and self.window > 0:
                self._delay = min(self._delay * 2, self.cap) if self._probing else self.window
                self._until = time.monotonic() + self._delay
            self._probing = False

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Report the Redis calls of the block: any outcome but Redis failing is a success."""
        try:
            yield
        except UNAVAILABLE as exc:
            self.failure(exc)
            raise
        except BaseException:
            self.success()
            raise
        self.success()


class Lookup:
    """Serve lists for one key prefix from an injected Redis client."""

    def __init__(self, client: redis.Redis, keys: Keys | None = None, pointer_ttl: float = 1.0,
                 cache_size: int = 20_000, retry_after: float = 1.0, max_age: float = 0.0,
                 breaker_cap: float = 4.0):
        self.client, self.keys, self.pointer_ttl = client, keys or Keys(), pointer_ttl
        self.cache_size, self.max_age = cache_size, max_age
        self.breaker = Breaker(retry_after, breaker_cap)
        self._pointer: tuple[str, float] | None = None  # (run id, read at)
        self._runs: dict[str, _Run] = {}
        self._last_good: _Run | None = None
        # (run id, that run's lists): swapped as one tuple, so threads never mix two runs' lists
        self._lists: tuple[str | None, dict[int, bytes]] = (None, {})

    def _current(self, refresh: bool = False) -> tuple[_Run, bool]:
        """Return the live run, and whether it is only the run seen last (``current`` is missing)."""
        now = time.monotonic()
        if refresh or self._pointer is None or now - self._pointer[1] > self.pointer_ttl:
            run_id = text(self.client.get(self.keys.current))
            if run_id is None:
                if self._last_good is None:
                    raise NoLiveRun("no run has been published yet")
                log.warning("%s is missing; serving run %s, seen last", self.keys.current,
                            self._last_good.run_id)
                return self._last_good, True
            self._pointer = (run_id, now)
        run_id = self._pointer[0]
        return self._runs.get(run_id) or self._load_run(run_id), False

    def _load_run(self, run_id: str) -> _Run:
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.keys.meta(run_id), ["created_at", "top_n"])
        pipe.get(self.keys.popular(run_id))
        pipe.get(self.keys.users(run_id))
        pipe.get(self.keys.current)
        (created, top_n), popular, users, live = pipe.execute()
        if popular is None or users is None:
            if text(live) != run_id:
                raise KeyError(run_id)  # retired under us
            log.warning("live run %s lacks its %s", run_id, "user index" if popular else "popular list")
            if popular is None and not top_n:
                raise NoPopular(run_id)
        run = _Run(run_id, text(created), int(top_n or 0) or len(json.loads(popular)), popular,
                   None if users is None else frozenset(json.loads(users)))
        self._runs = {run_id: run}  # keep only the live run's cache
        if popular is not None:
            self._last_good = run
        return run

    def _with_run(self, read, user_id: int | None, n: int) -> Result:
        """Return ``read(run)`` on the live run; on a retired run re-read ``current`` (twice at most).

        While Redis is unavailable (or the breaker keeps requests off it) the answer is the last
        known popular list, stale; StoreUnavailable when there is none.
        """
        if not self.breaker.allow():
            return self._stale(user_id, n, "Redis unavailable (circuit open; retrying shortly)")
        try:
            with self.breaker.guard():
                for attempt in range(3):
                    try:
                        run, stale = self._current(refresh=attempt > 0)
                        result = read(run)
                    except KeyError:
                        log.info("run retired between reads; re-reading %s", self.keys.current)
                        self._runs.clear()
                        continue
                    if stale:
                        result.stale, result.reason = True, result.reason or NO_CURRENT
                    return result
                raise StoreUnavailable("the live run keeps disappearing")
        except NoPopular:
            return self._stale(user_id, n, "the live run's popular list is missing", MISSING)
        except UNAVAILABLE as exc:
            self._pointer = None
            return self._stale(user_id, n, f"Redis unavailable: {type(exc).__name__}")

    def _stale(self, user_id: int | None, n: int, why: str, reason: str = UNAVAILABLE_REASON) -> Result:
        if self._last_good is None:
            raise StoreUnavailable(why)
        log.warning("%s; serving the last known popular list (run %s)", why, self._last_good.run_id)
        return self._last_good.result(user_id, n, reason=reason, stale=True)

    def max_n(self) -> int:
        """Return the list length the live run published (the largest valid ``n``)."""
        if self.breaker.allow():
            try:
                with self.breaker.guard():
                    return self._current()[0].top_n
            except (KeyError, NoPopular):
                self._runs.clear()
            except UNAVAILABLE:
                self._pointer = None
        if self._last_good is None:
            raise StoreUnavailable("Redis unavailable")
        return self._last_good.top_n

    def popular(self, n: int) -> Result:
        """Return the live run's popular list."""
        return self._with_run(lambda run: run.result(None, n), None, n)

    def recommendations(self, user_id: int, n: int) -> Result:
        """Return the user's list; the popular list when the run has none, or it is missing or empty."""

        def read(run: _Run) -> Result:
            if run.users is not None and user_id not in run.users:  # unknown user: no round trip at all
                return run.result(user_id, n)
            cached_run, lists = self._lists
            if cached_run != run.run_id:
                lists = {}
                self._lists = (run.run_id, lists)
            items = lists.get(user_id)
            if items is None:
                items = self.client.get(self.keys.user(run.run_id, user_id))  # one round trip
                if items is None:  # retired (retry on the new live run), or the key is gone
                    if text(self.client.get(self.keys.current)) not in (run.run_id, None):
                        raise KeyError(run.run_id)
                    return run.result(user_id, n, reason=MISSING if run.users is not None else None)
                if self.cache_size:  # bytes: cheap to keep, invisible to the garbage collector
                    if len(lists) >= self.cache_size:
                        lists.clear()
                    lists[user_id] = items
            if items == b"[]":
                return run.result(user_id, n, reason=EMPTY)  # never serve an empty personal list
            return run.result(user_id, n, items)

        return self._with_run(read, user_id, n)

    def ready(self) -> tuple[bool, str]:
        """Return (ready, reason): Redis answers, a live run with its keys exists (and, with ``max_age``
        > 0, it was created at most ``max_age`` seconds ago)."""
        if not self.breaker.allow():
            return False, "Redis unavailable (circuit open after a timeout)"
        try:
            with self.breaker.guard():
                self.client.ping()
                run, stale = self._current(refresh=True)
                if stale:
                    return False, f"{self.keys.current} is missing (serving run {run.run_id}, seen last)"
                if self.max_age > 0:
                    created = self.client.hget(self.keys.meta(run.run_id), "created_ts")
                    age = None if created is None else time.time() - float(created)
                    if age is not None and age > self.max_age:
                        return False, (f"live run {run.run_id} is {age:.0f}s old "
                                       f"(RECSYS_MAX_RUN_AGE={self.max_age:.0f})")
                return True, f"live run {run.run_id}"
        except NoLiveRun as exc:
            return False, str(exc)
        except (KeyError, NoPopular) as exc:
            return False, f"live run {exc.args[0]} has no popular list or user index"
        except UNAVAILABLE as exc:
            return False, f"Redis unavailable: {type(exc).__name__}"
