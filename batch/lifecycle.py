"""The run lifecycle, one code path for ``run``, the sharded ``publish`` and ``rollback``.

:func:`prepare` (refuse an evicting Redis, delete dead holders' pending runs, check the memory
headroom) -> register pending -> user lists, then popular list, user index, metadata (pipelined)
-> :func:`gate` (refuse a run implausible against the live one) -> check the lock token -> mark
complete + add to ``runs`` -> flip ``current`` (a script that checks the lock first) -> retire
beyond K while the lock is held.  A failed step leaves ``current`` alone and its keys pending, for
the next run to delete (at once when Redis was full).  ``hook(step)`` runs after ``lists``,
``meta``, ``before_flip`` and ``after_flip`` (fault injection).  Invariant after any fault:
``current`` names a run listed complete whose every key exists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sized
from itertools import chain, islice
from typing import NamedTuple

from batch.store import FullError, LostLockError, RunStore, StoreError, mib
from lookup_api.contract.keys import DEFAULT_KEEP
from lookup_api.contract.meta import COMPLETE, F, RunMeta

log = logging.getLogger(__name__)

Hook = Callable[[str], None]  # called after each step named in the module docstring (fault injection)


EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random")  # policies that may evict a run's keys
KEY_OVERHEAD = 96  # bytes Redis spends per user list beyond its payload, when no live run measures it
GATE_SHARE = 0.5  # a run with fewer than this share of the live run's users, movies or ratings is refused


class GateError(StoreError):
    """The run is implausible against the live one: refused before the flip (``--force`` overrides)."""


class PublishReport(NamedTuple):
    run_id: str
    users: int
    seconds: float
    retired: list[str]
    broken: tuple[str, ...] = ()  # complete runs deleted because keys of theirs had gone
    already: bool = False  # the run was published before (a repeated sharded publish)


def _skip(step: str) -> None:
    """The default hook: do nothing."""


def publish(store: RunStore, run_id: str, lists: Iterable[tuple[int, bytes]], popular: bytes,
            meta: RunMeta | dict, keep: int = DEFAULT_KEEP, token: str | None = None, hook: Hook = _skip, *,
            users: int | None = None, force: bool = False, allow_eviction: bool = False,
            extra: Iterable[tuple[str, bytes]] = ()) -> PublishReport:
    """:func:`prepare`, write a run's lists, :func:`commit` it (``token``: the lock held; None: take it).

    ``users``: how many lists ``lists`` yields, for the memory estimate (default: its length, or
    for an iterator without one the first chunk's: an underestimate if it yields more).
    ``extra``: the run's other lists as ``(key, bytes)`` (per-genre popular, "more like this"),
    written after the user lists; a sequence counts in the memory estimate.
    """
    if keep < 1:
        raise StoreError("keep must be at least 1")
    if token is None:
        with store.lock() as token:
            return publish(store, run_id, lists, popular, meta, keep, token, hook, users=users,
                           force=force, allow_eviction=allow_eviction, extra=extra)
    started = time.perf_counter()
    if users is None and isinstance(lists, Sized):
        users = len(lists)
    lists = iter(lists)
    first = list(islice(lists, store.chunk))  # measured for the estimate, then written first
    sizes = [len(payload) for _, payload in first]
    fixed = len(popular) + (sum(len(k) + len(v) + 64 for k, v in extra) if isinstance(extra, Sized) else 0)
    prepare(store, len(first) if users is None else users, sum(sizes) / max(len(sizes), 1), fixed,
            allow_eviction=allow_eviction)
    try:
        user_ids = store.write_lists(run_id, chain(first, lists), token)
        store.write_extra(run_id, extra, token)
        hook("lists")
        retired, broken = commit(store, run_id, popular, user_ids, meta, keep, token, hook, force=force,
                                 allow_eviction=allow_eviction)
    except FullError:
        log.warning("Redis is full: deleting this run's %s keys written so far", store.delete_run(run_id))
        raise
    return PublishReport(run_id, len(user_ids), time.perf_counter() - started, retired, tuple(broken))


def prepare(store: RunStore, users: int, payload: float | None, fixed: int = 0, *,
            allow_eviction: bool = False) -> None:
    """Before a run writes: refuse an evicting Redis, delete dead runs' pending keys, check the headroom.

    Called with the lock held, so every pending run not listed complete belongs to a dead or
    lock-less holder.  The run's size is ``users`` lists of ``payload`` bytes each (None: as the
    live run's) plus ``fixed`` bytes, each list costing Redis what a list of the live run costs
    beyond its payload (measured with MEMORY USAGE; :data:`KEY_OVERHEAD` without a live run),
    plus one pipelined chunk in flight.  FullError (nothing written) says how much is missing.
    """
    nodes = store.memory()
    evicting = sorted({n["policy"] for n in nodes if n["max"] and n["policy"] in EVICTING})
    if evicting and not allow_eviction:
        raise StoreError(f"Redis evicts keys when full (maxmemory-policy {', '.join(evicting)}): it could "
                         "delete the live run's lists. Set maxmemory-policy noeviction, or pass "
                         "--allow-eviction (a user whose list was evicted then gets the popular list)")
    history, live = {r for r, _ in store.runs()}, store.current()
    dead = [run_id for run_id in store.pending() if run_id not in history and run_id != live]
    for run_id in dead:
        log.info("deleted the pending run %s of a dead run (%s keys)", run_id, store.delete_run(run_id))
    if dead:  # what they held is free now: measure again
        nodes = store.memory()
    costs = store.key_costs(live) if live else None
    if payload is None and costs is None:
        return log.info("memory: no live run to estimate this run's size from; not checked")
    usage, length, _ = costs or (0.0, 0.0, 0.0)
    per_list = (payload if payload is not None else length) + (usage - length if costs else KEY_OVERHEAD)
    # per master (a cluster spreads the keys), + 8 B per user index entry, + one chunk in Redis' input buffer
    needed = (users * (per_list + 8) + fixed + store.chunk * per_list) / len(nodes)
    limited = [n for n in nodes if n["max"]]
    if limited:
        log.info("memory: this run needs about %s per master; %s free under maxmemory", mib(needed),
                 mib(min(n["max"] - n["used"] for n in limited)))
    for node in limited:
        free = max(node["max"] - node["used"], 0)
        if free < needed:
            where = f" on each of {len(nodes)} masters" if len(nodes) > 1 else ""
            raise FullError(f"Redis has {mib(free)} free under maxmemory {mib(node['max'])} (used "
                            f"{mib(node['used'])}), and this run needs about {mib(needed)}{where} ({users} "
                            f"lists of ~{per_list:.0f} B): {mib(needed - free)} missing. Nothing was written "
                            "and current was not moved; raise maxmemory or free memory (older runs: a "
                            "lower --keep)")


def commit(store: RunStore, run_id: str, popular: bytes, user_ids: list[int], meta: RunMeta | dict,
           keep: int, token: str, hook: Hook = _skip, *, force: bool = False,
           allow_eviction: bool = False) -> tuple[list[str], list[str]]:
    """Write the popular list, index and metadata, :func:`gate`, mark complete, flip, retire.

    Returns the retired runs and those of them deleted as broken.  Refused (LostLockError,
    ``current`` untouched, the run left pending) once ``token`` no longer holds the lock: such a
    run is never listed complete, never flipped to.  Refused by the gate: GateError, unless
    ``force`` (the reasons are then recorded in the meta as ``gate_forced``).
    """
    meta = RunMeta.of(meta)
    store.write_index(run_id, popular, user_ids, meta)
    hook("meta")
    _check_lock(store, run_id, token)  # a run that lost its lock may have lost its lists with it
    gate(store, run_id, user_ids, popular, meta, force=force, allow_eviction=allow_eviction)
    _check_lock(store, run_id, token)
    store.mark_complete(run_id, meta.created_ts or time.time())
    hook("before_flip")
    try:
        previous = store.flip(run_id, token)
    except LostLockError:
        store.unmark(run_id)
        raise
    hook("after_flip")
    store.unpend(run_id)
    log.info("published run %s: %s user lists, current flipped (was %s)", run_id, len(user_ids), previous)
    return retire(store, keep, token, previous=previous)


def _check_lock(store: RunStore, run_id: str, token: str) -> None:
    if not store.holds(token):
        raise LostLockError(f"run {run_id} lost the batch lock before publishing (expired or taken by "
                            "another run); current was not moved")


def gate(store: RunStore, run_id: str, user_ids: list[int], popular: bytes, meta: RunMeta, *,
         force: bool = False, allow_eviction: bool = False) -> None:
    """Refuse (GateError) a run implausible against the live one, before it is listed complete.

    Implausible: a user list missing or empty, an empty popular list, or fewer than
    :data:`GATE_SHARE` of the live run's users, movies or ratings.  ``force`` publishes it anyway
    and records why in its meta (``gate_forced``); a missing list only with ``allow_eviction``.
    """
    absent, empty = store.list_lengths(run_id, user_ids)
    if absent and not allow_eviction:
        raise StoreError(f"run {run_id}: {len(absent)} of {len(user_ids)} user lists vanished right after "
                         f"being written (e.g. user {absent[0]}): is Redis evicting keys? current was not "
                         "moved")
    reasons = []
    if empty:
        reasons.append(f"{len(empty)} of {len(user_ids)} users have an empty list (e.g. user {empty[0]})")
    if popular in (b"", b"[]"):
        reasons.append("the popular list is empty")
    live = store.current()
    live_meta = (store.meta(live) if live else None) or RunMeta()
    for field, what in ((F.n_users, "users"), (F.n_items, "movies"), (F.n_ratings, "ratings")):
        new, old = getattr(meta, field), getattr(live_meta, field)
        if new is not None and old and new < GATE_SHARE * old:
            reasons.append(f"{new} {what}, under {GATE_SHARE:.0%} of the live run {live}'s {old}")
    if not reasons:
        return
    if not force:
        raise GateError(f"run {run_id} refused by the publish gate: {'; '.join(reasons)}. The live run is "
                        "untouched; --force publishes it anyway")
    log.warning("publish gate overridden (--force) for run %s: %s", run_id, "; ".join(reasons))
    store.set_meta(run_id, gate_forced="; ".join(reasons))


def retire(store: RunStore, keep: int, token: str,
           previous: str | None = None) -> tuple[list[str], list[str]]:
    """Delete complete runs beyond ``keep``, broken history entries and failed runs' keys.

    Kept, in order of preference: the live run, ``previous`` (the run live just before the
    flip: readers may still be on it), then the newest runs; runs rolled back *from* come last.
    A complete run whose meta, popular list or user index is gone is broken: deleted, with a
    warning.  Stops as soon as ``token`` no longer holds the lock (the new holder owns the pending
    runs).  Returns the retired runs and those of them that were broken.
    """
    live = store.current()
    history = [r for r, _ in store.runs()]
    broken = {r: problems for r in history if r != live and (problems := missing(store, r, every_list=False))}
    order = [live, previous, *sorted(history, key=lambda r: _rolled_back(store, r))]  # stable: newest first
    keepers = [r for r in dict.fromkeys(order) if r in history and r not in broken][:keep]
    doomed = [r for r in history if r not in keepers and r != live]
    for run_id in store.pending():
        if run_id in history:
            store.unpend(run_id)  # listed complete (e.g. a crash right after its flip): a run, not an orphan
        elif run_id != live:
            doomed.append(run_id)
    retired = []
    for run_id in doomed:
        if not store.holds(token):
            log.warning("lost the batch lock while retiring; %s left for the next run", doomed[len(retired):])
            break
        if run_id in broken:
            log.warning("deleting run %s as broken (%s missing)%s", run_id, ", ".join(broken[run_id]),
                        "; it was the live run until this flip" if run_id == previous else "")
        log.info("retired run %s (%s keys)", run_id, store.delete_run(run_id))
        retired.append(run_id)
    return retired, [r for r in retired if r in broken]


def missing(store: RunStore, run_id: str, every_list: bool = True) -> list[str]:
    """Return what ``run_id`` lacks to be served (empty: listed ``complete``, every key present).

    Checks the status, the popular list, the user index, the per-genre popular lists the meta
    names and (``every_list``) every user list the index names, in pipelined single-key EXISTS.
    """
    meta, popular, users = store.run_state(run_id)
    status = meta.status if meta else None
    problems = [] if status == COMPLETE else [f"status {status or 'absent'}"]
    problems += [] if popular else ["popular list"]
    if meta and meta.stored_n and store.count_missing([store.keys.catalog(run_id)]):
        problems.append("catalog")  # runs written since the catalog exists (stored_n) need theirs
    genres = (meta.genres if meta else None) or []
    if absent := store.count_missing([store.keys.genre_popular(run_id, g) for g in genres]):
        problems.append(f"genre lists ({absent} of {len(genres)})")
    if users is None:
        return [*problems, "user index"]
    ids = sorted(users) if every_list else []
    if absent := store.count_missing([store.keys.user(run_id, u) for u in ids]):
        problems.append(f"user lists ({absent} of {len(ids)})")
    return problems


def _rolled_back(store: RunStore, run_id: str) -> bool:
    return store.has_meta(run_id, F.rolled_back_at)


def rollback(store: RunStore, run_id: str | None = None, hook: Hook = _skip) -> str:
    """Point ``current`` at ``run_id`` (default: the newest intact complete run older than the live one).

    Takes the batch lock (refused while a run is publishing), refuses a run unless it is listed
    complete with every key present, and marks the run it leaves, so neither the default rollback
    nor retirement prefers that one again.
    """
    with store.lock(ttl=30) as token:
        live = store.current()
        history = [r for r, _ in store.runs()]
        if run_id is None:
            older = history[history.index(live) + 1 :] if live in history else history
            older = [r for r in older if not _rolled_back(store, r)]
            run_id = next((r for r in older if not missing(store, r)), None)
            if run_id is None:
                raise StoreError("no earlier complete run to roll back to")
        elif run_id not in history:
            raise StoreError(f"run {run_id} is unknown or was deleted; complete runs: "
                             f"{', '.join(history) or 'none'}")
        elif problems := missing(store, run_id):
            raise StoreError(f"run {run_id} cannot be served ({', '.join(problems)} missing or wrong); "
                             "current was not moved")
        hook("before_flip")
        store.flip(run_id, token)
        hook("after_flip")
        if live in history and live != run_id:
            store.set_meta(live, rolled_back_at=time.time())
        store.drop_meta(run_id, F.rolled_back_at)
    log.info("rolled back: current %s -> %s", live, run_id)
    return run_id
