"""The sharded variant of ``run``: ``train`` -> N x ``score --shard I/N`` -> ``publish``.

For a Kubernetes Indexed Job: one pod trains and writes artifacts (see
:mod:`batch.artifacts`) to shared storage; N pods each score a contiguous slice of users
and write that slice's lists into the pending run; ``publish`` flips ``current`` only when
every shard has reported complete.  ``train`` takes the batch lock as a lease (no
heartbeat: it expires after ``lock_ttl``) and ``publish`` releases it, so a nightly
CronJob and a sharded run never interleave.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from batch import artifacts, pipeline
from batch.download import ML_1M, Release
from batch.job import load_stage, run_meta
from batch.lists import encode_list, encode_lists, item_fragments
from batch.params import Params
from batch.store import PublishReport, RunStore, StoreError
from lookup_api.contract.keys import new_run_id

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


def train_job(data_dir: Path | str, params: Params, out: Path | str, store: RunStore | None, *,
              release: Release = ML_1M, url: str | None = None, lock_ttl: float = 3600.0) -> dict:
    """Load and train once; write artifacts for the shards; return the manifest."""
    token = store.acquire(lock_ttl) if store is not None else None
    try:
        loaded = load_stage(data_dir, release, url)
        models = pipeline.train(loaded.data, loaded.movies, params)
        timings = {"load": loaded.seconds, **models.timings}
        manifest = {
            "run_id": new_run_id(),
            "lock_token": token,
            "params": params.to_dict(),
            "meta": run_meta(loaded, params, timings),
        }
        fragments = item_fragments(loaded.data.item_ids, loaded.movies)
        artifacts.save(out, loaded.data, models, fragments, manifest)
    except BaseException:
        if store is not None and token:
            store.release(token)
        raise
    log.info("trained run %s; artifacts in %s", manifest["run_id"], out)
    return manifest


def score_job(out: Path | str, shard: tuple[int, int], store: RunStore) -> int:
    """Score one shard's users from the artifacts and write their lists into the pending run."""
    index, total = shard
    data, models, fragments, manifest, params = artifacts.load(out)
    run_id = manifest["run_id"]
    if store.current() == run_id or run_id in dict(store.runs()):
        raise StoreError(f"run {run_id} is already published; train again for a new run")
    users = shard_users(data.n_users, index, total)
    started = time.perf_counter()
    recs = pipeline.recommend(models, data, params, users=users)
    lists = encode_lists(data.user_ids[users], recs.items, recs.scores, fragments)
    written = store.write_lists(run_id, lists)
    store.mark_shard(run_id, index, len(written))
    log.info("shard %s/%s of run %s: %s users in %.2fs", index, total, run_id, len(written),
             time.perf_counter() - started)
    return len(written)


def publish_job(out: Path | str, total: int, store: RunStore, keep: int = 2) -> PublishReport:
    """Flip ``current`` to the trained run once all ``total`` shards are complete."""
    started = time.perf_counter()
    data, models, fragments, manifest, params = artifacts.load(out)
    run_id, token = manifest["run_id"], manifest.get("lock_token")
    done = store.shards_done(run_id)
    missing = sorted(set(range(total)) - set(done))
    if missing:
        raise StoreError(f"run {run_id} is not complete: shard(s) {missing} of {total} have not finished; "
                         "current stays where it is")
    if sum(done.values()) != data.n_users or len(done) != total:
        raise StoreError(f"run {run_id}: shards wrote {sum(done.values())} lists in {len(done)} shards, "
                         f"expected {data.n_users} in {total}")
    pop_ids, pop_scores = pipeline.popular(models, params.top_n)
    meta = {**manifest["meta"], "shards": str(total)}
    retired = store.finalize(run_id, encode_list(fragments, pop_ids, pop_scores),
                             data.user_ids.tolist(), meta, keep, token=token)
    if token:
        store.release(token)
    return PublishReport(run_id, data.n_users, time.perf_counter() - started, retired)
