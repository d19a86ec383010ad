"""The run lifecycle, one code path for ``run``, the sharded ``publish`` and ``rollback``.

register pending -> user lists, then popular list, user index, metadata (pipelined) -> check the
lock token -> mark complete + add to ``runs`` -> flip ``current`` (a script that checks the lock
first) -> retire beyond K while the lock is held.  A failed step leaves ``current`` alone and its
keys pending, for the next run to delete.  ``hook(step)`` runs after ``lists``, ``meta``,
``before_flip`` and ``after_flip`` (fault injection).  Invariant after any fault: ``current``
names a run listed complete whose every key exists.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from batch.store import LostLockError, RunStore, StoreError
from lookup_api.contract.keys import DEFAULT_KEEP

log = logging.getLogger(__name__)

Hook = Callable[[str], None]  # called after each step named in the module docstring (fault injection)


class PublishReport(NamedTuple):
    run_id: str
    users: int
    seconds: float
    retired: list[str]


def _skip(step: str) -> None:
    """The default hook: do nothing."""


def publish(store: RunStore, run_id: str, lists: Iterable[tuple[int, bytes]], popular: bytes, meta: dict,
            keep: int = DEFAULT_KEEP, token: str | None = None, hook: Hook = _skip) -> PublishReport:
    """Write a run's lists, then :func:`commit` it (``token``: the lock held; None: take it here)."""
    if keep < 1:
        raise StoreError("keep must be at least 1")
    if token is None:
        with store.lock() as token:
            return publish(store, run_id, lists, popular, meta, keep, token, hook)
    started = time.perf_counter()
    user_ids = store.write_lists(run_id, lists, token)
    hook("lists")
    retired = commit(store, run_id, popular, user_ids, meta, keep, token, hook)
    return PublishReport(run_id, len(user_ids), time.perf_counter() - started, retired)


def commit(store: RunStore, run_id: str, popular: bytes, user_ids: list[int], meta: dict,
           keep: int, token: str, hook: Hook = _skip) -> list[str]:
    """Write the popular list, index and metadata, mark complete, flip, retire; return retired runs.

    Refused (LostLockError, ``current`` untouched, the run left pending) once ``token`` no
    longer holds the lock: such a run is never listed complete, never flipped to.
    """
    store.write_index(run_id, popular, user_ids, meta)
    hook("meta")
    if not store.holds(token):
        raise LostLockError(f"run {run_id} lost the batch lock before publishing (expired or taken by "
                            "another run); current was not moved")
    store.mark_complete(run_id, float(meta.get("created_ts", time.time())))
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


def retire(store: RunStore, keep: int, token: str, previous: str | None = None) -> list[str]:
    """Delete complete runs beyond ``keep``, broken history entries and failed runs' keys.

    Kept, in order of preference: the live run, ``previous`` (the run live just before the
    flip: readers may still be on it), then the newest runs; runs rolled back *from* come last.
    Stops as soon as ``token`` no longer holds the lock (the new holder owns the pending runs).
    """
    live = store.current()
    history = [r for r, _ in store.runs()]
    broken = {r for r in history if r != live and missing(store, r, every_list=False)}
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
        log.info("retired run %s (%s keys)", run_id, store.delete_run(run_id))
        retired.append(run_id)
    return retired


def missing(store: RunStore, run_id: str, every_list: bool = True) -> list[str]:
    """Return what ``run_id`` lacks to be served (empty: listed ``complete``, every key present).

    Checks the status, the popular list, the user index and (``every_list``) every user list the
    index names, in pipelined single-key EXISTS.
    """
    pipe = store.client.pipeline(transaction=False)
    pipe.hget(store.keys.meta(run_id), "status")
    pipe.exists(store.keys.popular(run_id))
    pipe.get(store.keys.users(run_id))
    status, popular, users = pipe.execute()
    problems = [] if status == b"complete" else [f"status {(status or b'absent').decode()}"]
    problems += [] if popular else ["popular list"]
    if users is None:
        return [*problems, "user index"]
    ids = json.loads(users) if every_list else []
    for start in range(0, len(ids), store.chunk):
        pipe = store.client.pipeline(transaction=False)
        for user_id in ids[start : start + store.chunk]:
            pipe.exists(store.keys.user(run_id, user_id))
        absent = pipe.execute().count(0)
        if absent:
            return [*problems, f"user lists ({absent}+ of {len(ids)})"]
    return problems


def _rolled_back(store: RunStore, run_id: str) -> bool:
    return bool(store.client.hexists(store.keys.meta(run_id), "rolled_back_at"))


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
            store.client.hset(store.keys.meta(live), "rolled_back_at", f"{time.time():.3f}")
        store.client.hdel(store.keys.meta(run_id), "rolled_back_at")
    log.info("rolled back: current %s -> %s", live, run_id)
    return run_id
