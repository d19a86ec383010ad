"""The sharded variant of ``run``: ``train`` -> N x ``score --shard I/N`` -> ``publish``.

For a Kubernetes Indexed Job: one pod trains and writes artifacts (see
:mod:`batch.artifacts`) to shared storage; N pods each score a contiguous slice of users
and write that slice's lists into the pending run; ``publish`` commits the run through the
same :mod:`batch.lifecycle` as ``run`` once every shard has reported complete.  ``train`` takes
the batch lock as a lease and puts its token in the manifest: every step adopts it (refused once
it was lost), renews it by a heartbeat while it works and leaves it valid for ``lock_ttl`` more
seconds; ``score`` stops writing as soon as the lock is not the lease's, ``publish`` flips only
while it holds it and then releases it.  A crashed sharded run blocks the next run for at most
``lock_ttl`` after its last step (or until ``recsys-batch unlock``: the lease is never taken over
as dead, its steps being separate processes).  ``train`` runs :func:`batch.lifecycle.prepare`
before anything is written; a repeated ``publish`` of a published run does nothing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from batch import artifacts, pipeline
from batch.download import ML_1M, Release
from batch.job import drop_hidden, extras_meta, hidden_columns, load_stage, popular_list, run_extras, run_meta
from batch.lifecycle import PublishReport, commit, prepare
from batch.models.svd_process import SVDProcess
from batch.params import SPARE_ITEMS, Params
from batch.store import RunStore, StoreError
from lookup_api.contract.items import encode_lists, item_heads
from lookup_api.contract.keys import new_run_id
from lookup_api.contract.meta import RunMeta

log = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``I/N`` (0 <= I < N)."""
    try:
        index, total = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like I/N, e.g. 0/3, got {text!r}") from None
    if not 0 <= index < total:
        raise ValueError(f"shard index {index} must be in 0..{total - 1}")
    return index, total


def shard_users(n_users: int, index: int, total: int) -> np.ndarray:
    """Return the row indices of shard ``index`` of ``total`` (contiguous, sizes differ by <= 1)."""
    return np.array_split(np.arange(n_users), total)[index]


def train_job(data_dir: Path | str, params: Params, out: Path | str, store: RunStore, *,
              release: Release = ML_1M, url: str | None = None, lock_ttl: float = 900.0,
              allow_eviction: bool = False) -> dict:
    """Take the lease, load and train once, write artifacts for the shards; return the manifest.

    The memory check sizes the run like the live one, per user (:func:`batch.lifecycle.prepare`).
    The run's catalog, per-genre and "more like this" lists are written here, as ``run`` writes
    them; the titles hidden now (recorded in the manifest) are left out of every step's lists.
    """
    with store.lock(lock_ttl, keep=True, lease=True) as token, SVDProcess() as svd_process:
        loaded = load_stage(data_dir, release, url)
        prepare(store, loaded.data.n_users, None, allow_eviction=allow_eviction)
        models = pipeline.Models.fit(loaded.data, loaded.movies, params, svd_process=svd_process)
        timings = {"load": loaded.seconds, **models.timings}
        run_id, hidden_ids = new_run_id(), store.hidden_ids()
        hidden = hidden_columns(loaded.data, hidden_ids)
        heads = item_heads(loaded.data.item_ids, loaded.movies)
        stage = time.perf_counter()
        extras = run_extras(store.keys, run_id, loaded.data, loaded.movies, models, params, heads, hidden)
        timings["related"] = time.perf_counter() - stage
        meta = run_meta(loaded, params, timings, **extras_meta(extras, params, hidden))
        manifest = {"run_id": run_id, "lock_token": token, "lock_ttl": lock_ttl, "params": params.to_dict(),
                    "meta": meta.to_hash(), "hidden": sorted(hidden_ids)}
        store.write_extra(run_id, extras.lists, token)
        artifacts.save(out, loaded.data, models, heads, manifest)
    log.info("trained run %s; artifacts in %s", manifest["run_id"], out)
    return manifest


def _hidden(data, manifest: dict) -> np.ndarray:
    """Return the columns hidden when the run was trained (a manifest without the list: none)."""
    return hidden_columns(data, frozenset(manifest.get("hidden", ())))


def _lease(store: RunStore, manifest: dict, keep: bool):
    return store.lock(float(manifest["lock_ttl"]), token=manifest["lock_token"], keep=keep)


def score_job(out: Path | str, shard: tuple[int, int], store: RunStore) -> int:
    """Score one shard's users from the artifacts and write their lists into the pending run."""
    index, total = shard
    data, models, heads, manifest, params = artifacts.load(out)
    run_id = manifest["run_id"]
    if store.current() == run_id or run_id in dict(store.runs()):
        raise StoreError(f"run {run_id} is already published; train again for a new run")
    with _lease(store, manifest, keep=True) as token:
        users = shard_users(data.n_users, index, total)
        started = time.perf_counter()
        recs = pipeline.recommend(models, data, params.with_(top_n=params.top_n + SPARE_ITEMS), users=users)
        items = drop_hidden(recs.items, _hidden(data, manifest))
        lists = encode_lists(data.user_ids[users], items, recs.scores, recs.ratings, heads)
        written = store.write_lists(run_id, lists, token)
        store.mark_shard(run_id, index, len(written))
    log.info("shard %s/%s of run %s: %s users in %.2fs", index, total, run_id, len(written),
             time.perf_counter() - started)
    return len(written)


def publish_job(out: Path | str, total: int, store: RunStore, keep: int = 2, *,
                force: bool = False) -> PublishReport:
    """Commit the trained run (flip ``current``) once all ``total`` shards are complete; end the lease.

    A run published already is left alone (``already``); ``force``: past the publish gate.
    """
    started = time.perf_counter()
    data, models, heads, manifest, params = artifacts.load(out)
    run_id = manifest["run_id"]
    if store.current() == run_id or run_id in dict(store.runs()):
        log.info("run %s is already published; nothing to do", run_id)
        return PublishReport(run_id, data.n_users, 0.0, [], already=True)
    with _lease(store, manifest, keep=False) as token:
        done = store.shards_done(run_id)
        missing = sorted(set(range(total)) - set(done))
        if missing:
            raise StoreError(f"run {run_id} is not complete: shard(s) {missing} of {total} have not "
                             "finished; current stays where it is")
        if sum(done.values()) != data.n_users or len(done) != total:
            raise StoreError(f"run {run_id}: shards wrote {sum(done.values())} lists in {len(done)} shards, "
                             f"expected {data.n_users} in {total}")
        popular, _ = popular_list(models, heads, params.top_n + SPARE_ITEMS, _hidden(data, manifest))
        meta = RunMeta.from_hash(manifest["meta"]).with_(shards=total)
        retired, broken = commit(store, run_id, popular, data.user_ids.tolist(), meta, keep, token,
                                 force=force)
    return PublishReport(run_id, data.n_users, time.perf_counter() - started, retired, tuple(broken))
