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
from dataclasses import dataclass, field

import redis

from lookup_api.contract.connection import UNAVAILABLE, text
from lookup_api.contract.items import PERSONALIZED, POPULAR, catalog_heads
from lookup_api.contract.keys import Keys
from lookup_api.contract.meta import F, RunMeta
from lookup_api.contract.reader import (
    EMPTY,
    EMPTY_SET,
    MISSING,
    NO_CURRENT,
    REASONS,
    UNAVAILABLE_REASON,
    RunReader,
    filtered,
    pick,
)

log = logging.getLogger(__name__)

SIMILAR = "similar"  # the source of a "more like this" answer
__all__ = ["EMPTY", "MISSING", "NO_CURRENT", "REASONS", "UNAVAILABLE_REASON", "Lookup", "Result"]


class NoLiveRun(Exception):
    """Redis answers but no run has been published yet."""


class StoreUnavailable(Exception):
    """Redis could not be reached and there is nothing cached to fall back on."""


class NoPopular(LookupError):
    """The live run's popular list is gone (evicted): the popular list seen last stands in."""


class UnknownMovie(LookupError):
    """The live run has no "more like this" list for the movie (404)."""


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
    hidden: int = 0  # hidden titles skipped to fill n
    excluded: int = 0  # ``exclude`` ids skipped to fill n
    head: dict | None = None  # extra envelope fields (movie_id, genre)


@dataclass
class _Run:
    run_id: str
    generated_at: str | None
    top_n: int
    popular: bytes | None  # the stored JSON, never re-serialised (None: the key is gone)
    users: frozenset[int] | None  # the ids with a list (None: the index is gone; ask for each user)
    genres: tuple[str, ...] = ()  # genres with a popular list of their own
    heads: dict = field(default_factory=dict)  # the catalog: movie id -> its items' JSON head
    lists: dict = field(default_factory=dict)  # ("genre", g) / ("similar", m) -> stored bytes

    def result(self, user_id: int | None, n: int, items: bytes | None = None, reason: str | None = None,
               stale: bool = False, hidden=EMPTY_SET, exclude=EMPTY_SET, source: str | None = None,
               head: dict | None = None) -> Result:
        """Return the first ``n`` of ``items`` (a stored list; None: the popular list) that are
        neither hidden nor excluded (:func:`~lookup_api.contract.reader.filtered`)."""
        if items is None:
            source, items = POPULAR, self.popular
        if items is None:
            raise NoPopular(self.run_id)
        out, n_hidden, n_excluded = filtered(items, n, self.heads, hidden, exclude)
        return Result(user_id, source or PERSONALIZED, self.run_id, self.generated_at, out, stale, reason,
                      n_hidden, n_excluded, head)


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
                 breaker_cap: float = 4.0, hidden_ttl: float = 1.0):
        self.client, self.keys, self.pointer_ttl = client, keys or Keys(), pointer_ttl
        self.reader = RunReader(client, self.keys)
        self.hidden_ttl = hidden_ttl
        self._hidden: tuple[frozenset[int], float] = (EMPTY_SET, float("-inf"))  # (ids, read at)
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
            run_id = self.reader.current()
            if run_id is None:
                if self._last_good is None:
                    raise NoLiveRun("no run has been published yet")
                log.warning("%s is missing; serving run %s, seen last", self.keys.current,
                            self._last_good.run_id)
                return self._last_good, True
            self._pointer = (run_id, now)
        run_id = self._pointer[0]
        return self._runs.get(run_id) or self._load_run(run_id), False

    def hidden(self) -> frozenset[int]:
        """Return the hidden titles, read at most once per ``hidden_ttl`` seconds (one HKEYS)."""
        ids, read_at = self._hidden
        now = time.monotonic()
        if now - read_at > self.hidden_ttl:
            ids = self.reader.hidden_ids()
            self._hidden = (ids, now)
        return ids

    def _load_run(self, run_id: str) -> _Run:
        names = (F.created_at, F.top_n, F.genres)
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.keys.meta(run_id), list(names))
        pipe.get(self.keys.popular(run_id))
        pipe.get(self.keys.users(run_id))
        pipe.get(self.keys.current)
        pipe.get(self.keys.catalog(run_id))
        values, popular, users, live, catalog = pipe.execute()
        meta = RunMeta.from_hash({k: v for k, v in zip(names, values, strict=True) if v is not None})
        if popular is None or users is None:
            if text(live) != run_id:
                raise KeyError(run_id)  # retired under us
            log.warning("live run %s lacks its %s", run_id, "user index" if popular else "popular list")
            if popular is None and not meta.top_n:
                raise NoPopular(run_id)
        run = _Run(run_id, meta.created_at, meta.top_n or len(json.loads(popular)), popular,
                   None if users is None else frozenset(json.loads(users)), tuple(meta.genres or ()),
                   heads=catalog_heads(catalog))
        self._runs = {run_id: run}  # keep only the live run's cache
        if popular is not None:
            self._last_good = run
        return run

    def _with_run(self, read, user_id: int | None, n: int, exclude=EMPTY_SET, cached=None) -> Result:
        """Return ``read(run, hidden)`` on the live run; on a retired run re-read ``current`` (twice at most).

        While Redis is unavailable (or the breaker keeps requests off it) the answer is stale: the
        last known run's list ``cached`` names if it holds it (a ``lists`` key), else its popular
        list; StoreUnavailable when there is none.  Hidden titles are dropped from stale answers too.
        """
        def stale(why: str, reason: str = UNAVAILABLE_REASON) -> Result:
            return self._stale(user_id, n, why, reason, exclude, cached)

        if not self.breaker.allow():
            return stale("Redis unavailable (circuit open; retrying shortly)")
        try:
            with self.breaker.guard():
                hidden = self.hidden()
                for attempt in range(3):
                    try:
                        run, stale_run = self._current(refresh=attempt > 0)
                        result = read(run, hidden)
                    except KeyError:
                        log.info("run retired between reads; re-reading %s", self.keys.current)
                        self._runs.clear()
                        continue
                    if stale_run:
                        result.stale, result.reason = True, result.reason or NO_CURRENT
                    return result
                raise StoreUnavailable("the live run keeps disappearing")
        except NoPopular:
            return stale("the live run's popular list is missing", MISSING)
        except UNAVAILABLE as exc:
            self._pointer = None
            return stale(f"Redis unavailable: {type(exc).__name__}")

    def _stale(self, user_id: int | None, n: int, why: str, reason: str = UNAVAILABLE_REASON,
               exclude=EMPTY_SET, cached=None) -> Result:
        last = self._last_good
        if last is None:
            raise StoreUnavailable(why)
        hidden = self._hidden[0]  # as read last: Redis cannot be asked
        if cached is not None and cached[0] == SIMILAR:
            if cached not in last.lists:
                raise StoreUnavailable(why)
            log.warning("%s; serving the last known list %s (run %s)", why, cached, last.run_id)
            return last.result(None, n, last.lists[cached], reason, True, hidden, exclude, SIMILAR,
                               {"movie_id": cached[1]})
        if cached is not None and cached in last.lists:
            log.warning("%s; serving the last known list %s (run %s)", why, cached, last.run_id)
            return last.result(None, n, last.lists[cached], reason, True, hidden, exclude, POPULAR,
                               {"genre": cached[1]})
        log.warning("%s; serving the last known popular list (run %s)", why, last.run_id)
        return last.result(user_id, n, reason=reason, stale=True, hidden=hidden, exclude=exclude)

    def max_n(self) -> int:
        """Return the list length the live run published (the largest valid ``n``)."""
        return self._live_field("top_n")

    def genres(self) -> tuple[str, ...]:
        """Return the genres the live run has a popular list for (those ``?genre=`` accepts)."""
        return self._live_field("genres")

    def _live_field(self, name: str):
        """Return attribute ``name`` of the live run, or of the last good one while Redis is unavailable."""
        if self.breaker.allow():
            try:
                with self.breaker.guard():
                    return getattr(self._current()[0], name)
            except (KeyError, NoPopular):
                self._runs.clear()
            except UNAVAILABLE:
                self._pointer = None
        if self._last_good is None:
            raise StoreUnavailable("Redis unavailable")
        return getattr(self._last_good, name)

    def _stored(self, run: _Run, key: tuple, fetch) -> bytes | None:
        """Return one of ``run``'s genre or similar lists, cached; KeyError when the run was retired."""
        raw = run.lists.get(key)
        if raw is None:
            raw = fetch()
            if raw is None:
                if self.reader.current() not in (run.run_id, None):
                    raise KeyError(run.run_id)
                return None
            if len(run.lists) >= self.cache_size:
                run.lists.clear()
            run.lists[key] = raw
        return raw

    def popular(self, n: int, exclude=EMPTY_SET, genre: str | None = None) -> Result:
        """Return the live run's popular list (within ``genre``: its per-genre list)."""
        if genre is None:
            return self._with_run(lambda run, hidden: run.result(None, n, hidden=hidden, exclude=exclude),
                                  None, n, exclude)
        key = ("genre", genre)

        def read(run: _Run, hidden) -> Result:
            raw = self._stored(run, key, lambda: self.reader.raw_popular(run.run_id, genre))
            if raw is None:  # listed in the meta, key gone: the whole popular list, marked
                return run.result(None, n, reason=MISSING, hidden=hidden, exclude=exclude,
                                  head={"genre": genre})
            return run.result(None, n, raw, hidden=hidden, exclude=exclude, source=POPULAR,
                              head={"genre": genre})

        return self._with_run(read, None, n, exclude, key)

    def similar(self, movie_id: int, n: int, exclude=EMPTY_SET) -> Result:
        """Return the movie's "more like this" list (UnknownMovie: the live run has none)."""
        key = (SIMILAR, movie_id)

        def read(run: _Run, hidden) -> Result:
            if movie_id in hidden:  # a hidden title has no page to show "more like this" on
                raise UnknownMovie(movie_id)
            raw = self._stored(run, key, lambda: self.reader.raw_similar(run.run_id, movie_id))
            if raw is None:
                raise UnknownMovie(movie_id)
            return run.result(None, n, raw, hidden=hidden, exclude=exclude, source=SIMILAR,
                              head={"movie_id": movie_id})

        return self._with_run(read, None, n, exclude, key)

    def recommendations(self, user_id: int, n: int, exclude=EMPTY_SET) -> Result:
        """Return the user's list; the popular list when the run has none, or it is missing or empty
        (:func:`~lookup_api.contract.reader.pick`, the rule ``show`` follows too)."""

        def read(run: _Run, hidden) -> Result:
            indexed = None if run.users is None else user_id in run.users
            items = None
            if indexed is not False:  # an unknown user costs no round trip at all
                cached_run, lists = self._lists
                if cached_run != run.run_id:
                    lists = {}
                    self._lists = (run.run_id, lists)
                items = lists.get(user_id)
                if items is None:
                    items = self.reader.raw_user(run.run_id, user_id)  # one round trip
                    if items is None:  # retired (retry on the new live run), or the key is gone
                        if self.reader.current() not in (run.run_id, None):
                            raise KeyError(run.run_id)
                    elif self.cache_size:  # bytes: cheap to keep, invisible to the garbage collector
                        if len(lists) >= self.cache_size:
                            lists.clear()
                        lists[user_id] = items
            source, reason = pick(items, indexed)
            return run.result(user_id, n, items if source == PERSONALIZED else None, reason,
                              hidden=hidden, exclude=exclude)

        return self._with_run(read, user_id, n, exclude)

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
                    created = self.reader.meta_fields(run.run_id, F.created_ts).created_ts
                    age = None if created is None else time.time() - created
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
