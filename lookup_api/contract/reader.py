"""The one reader of a published run, and the serving rule (what a list route answers).

:class:`RunReader` reads the live run, its meta (typed, :class:`~lookup_api.contract.meta.RunMeta`),
its lists and the hidden titles.  The API's ``Lookup`` (with its caches), the metrics collector and
``recsys-batch status``/``show`` all read through it, and the API and ``show`` decide what to serve
with the same two functions: :func:`pick` (the user's own list, or the popular one and why) and
:func:`~lookup_api.contract.items.filtered` (drop hidden titles and ``exclude`` ids, still
filling ``n`` from the spare items).  :meth:`RunReader.served` composes them without any cache:
it is what ``show`` prints.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Collection
from dataclasses import dataclass

from lookup_api.contract.connection import text
from lookup_api.contract.items import PERSONALIZED, POPULAR, catalog_heads, decode_items, filtered
from lookup_api.contract.keys import Keys
from lookup_api.contract.meta import RunMeta

# Why an answer is not the user's own list from the live run (a response's ``reason``)
MISSING, EMPTY, UNAVAILABLE_REASON, NO_CURRENT = "missing", "empty", "unavailable", "no-current"
REASONS = (MISSING, EMPTY, UNAVAILABLE_REASON, NO_CURRENT)
MAX_EXCLUDE = 100  # ids one request may exclude
DEFAULT_N = 10  # items served without n
EMPTY_SET: frozenset[int] = frozenset()


def pick(user_raw: bytes | None, indexed: bool | None) -> tuple[str, str | None]:
    """Return ``(source, reason)`` for a user: their own list, or the popular list and why.

    ``indexed``: whether the run's user index names the user (None: the index is gone).  A user
    the index does not name gets the popular list (no reason: the ordinary cold start); one it
    names whose list is missing or empty gets it with ``reason`` MISSING or EMPTY.
    """
    if indexed is False:
        return POPULAR, None
    if user_raw is None:
        return POPULAR, MISSING if indexed else None
    if user_raw == b"[]":
        return POPULAR, EMPTY  # never serve an empty personal list
    return PERSONALIZED, None


@dataclass
class Served:
    """One answer of a list route: the served items' JSON, and where they came from."""

    source: str
    run_id: str
    generated_at: str | None
    items_json: bytes
    reason: str | None = None
    hidden: int = 0  # hidden titles skipped
    excluded: int = 0  # ``exclude`` ids skipped

    def items(self) -> list[dict]:
        """Return the items parsed."""
        return decode_items(self.items_json)


class RunReader:
    """Read published runs under one key prefix (no cache, no writes)."""

    def __init__(self, client, keys: Keys | None = None):
        self.client, self.keys = client, keys or Keys()

    # ---- the run pointer and history ----
    def current(self) -> str | None:
        """Return the live run id, or None before the first publish."""
        return text(self.client.get(self.keys.current))

    def runs(self) -> list[tuple[str, float]]:
        """Return complete runs as ``(run_id, created_at)``, newest first."""
        return [(text(r), s) for r, s in self.client.zrevrange(self.keys.runs, 0, -1, withscores=True)]

    def pending(self) -> list[str]:
        """Return the runs being written, or left behind by a failed run or a cut-short deletion."""
        return [text(r) for r in self.client.zrange(self.keys.pending, 0, -1)]

    def meta(self, run_id: str) -> RunMeta | None:
        """Return a run's metadata, typed (None when the run has no meta hash)."""
        raw = self.client.hgetall(self.keys.meta(run_id))
        return RunMeta.from_hash(raw) if raw else None

    def meta_fields(self, run_id: str, *names: str) -> RunMeta:
        """Return only the fields ``names`` of a run's meta (one HMGET; absent fields are None)."""
        values = self.client.hmget(self.keys.meta(run_id), list(names))
        return RunMeta.from_hash({k: v for k, v in zip(names, values, strict=True) if v is not None})

    # ---- hidden titles (no run) ----
    def hidden(self) -> dict[int, dict]:
        """Return the hidden titles: movie id -> ``{"reason": str, "at": unix seconds}``."""
        out = {}
        for k, v in self.client.hgetall(self.keys.hidden).items():
            try:
                out[int(k)] = json.loads(v)
            except (ValueError, json.JSONDecodeError):
                out[int(k)] = {"reason": text(v), "at": None}
        return dict(sorted(out.items()))

    def hidden_ids(self) -> frozenset[int]:
        """Return the ids of the hidden titles (one HKEYS)."""
        return frozenset(int(k) for k in self.client.hkeys(self.keys.hidden))

    # ---- a run's stored lists, as bytes ----
    def raw_popular(self, run_id: str, genre: str | None = None) -> bytes | None:
        """Return the stored popular list (within ``genre`` if given), or None."""
        key = self.keys.popular(run_id) if genre is None else self.keys.genre_popular(run_id, genre)
        return self.client.get(key)

    def raw_user(self, run_id: str, user_id: int) -> bytes | None:
        """Return a user's stored list, or None."""
        return self.client.get(self.keys.user(run_id, user_id))

    def raw_similar(self, run_id: str, movie_id: int) -> bytes | None:
        """Return a movie's stored "more like this" list, or None."""
        return self.client.get(self.keys.similar(run_id, movie_id))

    def catalog(self, run_id: str) -> dict[int, bytes]:
        """Return the run's catalog as movie id -> the JSON head of its items (empty: no catalog)."""
        return catalog_heads(self.client.get(self.keys.catalog(run_id)))

    def users(self, run_id: str) -> frozenset[int] | None:
        """Return the ids the run's user index names (None: no index)."""
        raw = self.client.get(self.keys.users(run_id))
        return None if raw is None else frozenset(json.loads(raw))

    # ---- the same, parsed ----
    def popular(self, run_id: str) -> list[dict] | None:
        """Return the run's popular list, or None."""
        return self._decoded(run_id, self.raw_popular(run_id))

    def genre_popular(self, run_id: str, genre: str) -> list[dict] | None:
        """Return the run's popular list within ``genre``, or None."""
        return self._decoded(run_id, self.raw_popular(run_id, genre))

    def user_list(self, run_id: str, user_id: int) -> list[dict] | None:
        """Return a user's published list in ``run_id``, or None."""
        return self._decoded(run_id, self.raw_user(run_id, user_id))

    def similar(self, run_id: str, movie_id: int) -> list[dict] | None:
        """Return a movie's "more like this" list in ``run_id``, or None."""
        return self._decoded(run_id, self.raw_similar(run_id, movie_id))

    # ---- what the API serves, read afresh (no cache) ----
    def served(self, user_id: int, n: int, exclude: Collection[int] = EMPTY_SET,
               run_id: str | None = None) -> Served:
        """Return what ``GET /recommendations/<user_id>?n=&exclude=`` serves (LookupError: no run)."""
        run_id, meta = self._live(run_id)
        users = self.users(run_id)
        indexed = None if users is None else user_id in users
        user_raw = self.raw_user(run_id, user_id) if indexed is not False else None
        source, reason = pick(user_raw, indexed)
        raw = user_raw if source == PERSONALIZED else self._need(self.raw_popular(run_id), run_id)
        return self._serve(source, run_id, meta, raw, n, exclude, reason)

    def served_popular(self, n: int, exclude: Collection[int] = EMPTY_SET, genre: str | None = None,
                       run_id: str | None = None) -> Served:
        """Return what ``GET /popular?n=&genre=&exclude=`` serves (LookupError: no run or genre)."""
        run_id, meta = self._live(run_id)
        raw = self._need(self.raw_popular(run_id, genre), run_id)
        return self._serve(POPULAR, run_id, meta, raw, n, exclude)

    def served_similar(self, movie_id: int, n: int, exclude: Collection[int] = EMPTY_SET,
                       run_id: str | None = None) -> Served | None:
        """Return what ``GET /similar/<movie_id>`` serves (None: the run has no list for the movie)."""
        run_id, meta = self._live(run_id)
        raw = self.raw_similar(run_id, movie_id)
        return None if raw is None else self._serve("similar", run_id, meta, raw, n, exclude)

    def _live(self, run_id: str | None) -> tuple[str, RunMeta]:
        run_id = run_id or self.current()
        if run_id is None:
            raise LookupError("no run has been published yet")
        return run_id, self.meta(run_id) or RunMeta()

    @staticmethod
    def _need(raw: bytes | None, run_id: str) -> bytes:
        if raw is None:
            raise LookupError(f"run {run_id} has no such list (deleted?)")
        return raw

    def _serve(self, source: str, run_id: str, meta: RunMeta, raw: bytes, n: int,
               exclude: Collection[int], reason: str | None = None) -> Served:
        items, n_hidden, n_excluded = filtered(raw, n, self.catalog(run_id), self.hidden_ids(), exclude)
        return Served(source, run_id, meta.created_at, items, reason, n_hidden, n_excluded)

    def _decoded(self, run_id: str, raw: bytes | None) -> list[dict] | None:
        return None if raw is None else decode_items(raw, self.catalog(run_id))


def parse_n(raw: str | None, max_n: int) -> int:
    """Parse ``n=`` (ValueError says why it is refused): unset, :data:`DEFAULT_N` but at most ``max_n``
    (the published list length); else an integer from 1 to ``max_n``."""
    if raw is None:
        return min(DEFAULT_N, max_n)
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= max_n:
        raise ValueError(f"n must be an integer from 1 to {max_n}, got {raw[:40]!r}")
    return int(raw)


_IDS = re.compile(r"[0-9]{1,10}(?:,[0-9]{1,10})*")  # what a valid exclude= looks like (ASCII digits)


def parse_exclude(raw: str | None, limit: int = MAX_EXCLUDE, max_id: int = 2**31 - 1) -> frozenset[int]:
    """Parse ``exclude=1,2,3`` (ValueError says why it is refused): at most ``limit`` ids, each 1..max_id."""
    if raw is None or raw == "":
        return EMPTY_SET
    count = raw.count(",") + 1
    if count > limit:
        raise ValueError(f"exclude holds {count} ids; at most {limit}")
    if _IDS.fullmatch(raw) is not None:  # the usual case: one regex, one split
        ids = frozenset(map(int, raw.split(",")))
        if min(ids) >= 1 and max(ids) <= max_id:
            return ids
    ids = set()
    for part in raw.split(","):  # the rest, part by part (the message names the wrong one)
        if not part.isascii() or not part.isdigit() or not 1 <= int(part) <= max_id:
            raise ValueError(f"exclude must be comma-separated movie ids from 1 to {max_id}, got "
                             f"{part[:40]!r}")
        ids.add(int(part))
    return frozenset(ids)


def hidden_entry(reason: str | None, at: float | None = None) -> str:
    """Return the stored value of one hidden title: ``{"reason": .., "at": ..}``."""
    return json.dumps({"reason": reason or "", "at": round(at if at is not None else time.time(), 3)})


__all__ = ["DEFAULT_N", "EMPTY", "MAX_EXCLUDE", "MISSING", "NO_CURRENT", "REASONS", "UNAVAILABLE_REASON",
           "RunReader", "Served", "filtered", "hidden_entry", "parse_exclude", "parse_n", "pick"]
