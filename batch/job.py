"""The nightly job end to end: locate data -> load -> train -> recommend -> publish.

Composes the pure pipeline with the two edges (files, Redis).  Nothing is written to
Redis until every list has been computed, so a bad file or a failed model publishes
nothing and leaves the live run as it was.
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from batch import pipeline, telemetry
from batch.download import ML_1M, Release, download, find_dataset
from batch.interactions import Interactions
from batch.lifecycle import PublishReport, publish
from batch.lists import encode_lists, encode_one, item_heads
from batch.models.svd_process import SVDProcess
from batch.movielens import Movies
from batch.movielens_ratings import load_dir
from batch.params import Params
from batch.store import RunStore
from lookup_api.contract.keys import new_run_id

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    run_id: str
    users: int
    items: int
    ratings: int
    timings: dict[str, float] = field(default_factory=dict)
    published: PublishReport | None = None
    empty_lists: int = 0  # users whose list came out empty (batch/telemetry.py)
    popular_items: int = 0  # length of the popular list


def resolve_data_dir(data_dir: Path | str, url: str | None = None, release: Release = ML_1M) -> Path:
    """Return a directory holding the release's ratings and movies files, downloading if needed.

    ``data_dir`` itself is used as is when it holds the files; otherwise
    ``data_dir/<release>`` is used, and downloaded (verified) when missing.
    """
    found = find_dataset(data_dir, release)
    if found is not None:
        return found
    return download(data_dir, release, url=url)


def dataset_checksum(directory: Path, release: Release = ML_1M) -> str:
    """Return the sha256 over the movies and ratings files (identifies the input)."""
    digest = hashlib.sha256()
    for name in (release.fmt.movies_file, release.fmt.ratings_file):
        with (directory / name).open("rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def code_version() -> str:
    """Return the package version plus the git commit when known (``RECSYS_CODE_VERSION`` wins)."""
    if os.environ.get("RECSYS_CODE_VERSION"):
        return os.environ["RECSYS_CODE_VERSION"]
    try:
        pkg = version("recsys")
    except PackageNotFoundError:
        pkg = "unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return f"{pkg}+g{sha}"
    except (OSError, subprocess.SubprocessError):
        return pkg


@dataclass
class Loaded:
    """The validated input of a run."""

    release: Release
    directory: Path
    data: Interactions
    movies: Movies
    seconds: float


def load_stage(data_dir: Path | str, release: Release = ML_1M, url: str | None = None) -> Loaded:
    """Locate (downloading if needed), load and validate the dataset; index it."""
    started = time.perf_counter()
    directory = resolve_data_dir(data_dir, url, release)
    ratings, movies = load_dir(directory, release.fmt)
    data = Interactions.from_ratings(ratings)
    seconds = time.perf_counter() - started
    log.info("load: %s users x %s items, %s ratings, %.2fs", data.n_users, data.n_items, data.nnz, seconds)
    return Loaded(release, directory, data, movies, seconds)


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Return the high-water RSS of this process (``RUSAGE_CHILDREN``: of its finished children), MiB."""
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # Linux reports KiB


def run_meta(loaded: Loaded, params: Params, timings: dict[str, float],
             peaks: dict[str, float] | None = None, **extra) -> dict:
    """Return the metadata recorded with a run (see the README's key schema)."""
    now = datetime.now(UTC)
    return {
        "created_at": now.isoformat(timespec="seconds"),
        "created_ts": f"{now.timestamp():.3f}",
        "dataset": loaded.release.name,
        "dataset_dir": str(loaded.directory),
        "dataset_sha256": dataset_checksum(loaded.directory, loaded.release),
        "n_users": str(loaded.data.n_users),
        "n_items": str(loaded.data.n_items),
        "n_ratings": str(loaded.data.nnz),
        "top_n": str(params.top_n),
        "ranker": params.ranker,
        "params": params.to_dict(),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        **({"peak_rss_mib": peaks} if peaks else {}),
        "code_version": code_version(),
        **extra,
    }


def run_job(
    data_dir: Path | str,
    params: Params,
    store: RunStore | None,
    *,
    keep: int = 2,
    url: str | None = None,
    progress: bool = False,
    release: Release = ML_1M,
    token: str | None = None,
    force: bool = False,
    allow_eviction: bool = False,
) -> JobResult:
    """Train on every rating, rank for every user, and publish (``store=None``: dry run).

    ``token``: the batch lock this run holds (None: taken for the publish); publishing is refused
    if it was lost meanwhile.  ``force``: publish a run the publish gate refuses;
    ``allow_eviction``: publish to a Redis whose maxmemory-policy may evict keys
    (:func:`batch.lifecycle.publish`).
    """
    started = time.perf_counter()
    with SVDProcess() as svd_process:  # starts now: its imports overlap the load
        loaded = load_stage(data_dir, release, url)
        data, timings = loaded.data, {"load": loaded.seconds}
        peaks = {"load": peak_rss_mib()}  # the process's high-water mark after each stage
        models = pipeline.Models.fit(data, loaded.movies, params, svd_process=svd_process)
    peaks.update(train=peak_rss_mib(), svd_child=peak_rss_mib(resource.RUSAGE_CHILDREN))
    recs = pipeline.recommend(models, data, params)
    peaks["recommend"] = peak_rss_mib()
    timings.update(models.timings)

    stage = time.perf_counter()
    heads = item_heads(data.item_ids, loaded.movies)
    pop_ids, pop_scores, pop_ratings = pipeline.popular(models, params.top_n)
    popular = encode_one(heads, pop_ids, pop_scores, pop_ratings)
    lists = encode_lists(data.user_ids, recs.items, recs.scores, recs.ratings, heads)
    run_id = new_run_id()
    result = JobResult(run_id, data.n_users, data.n_items, data.nnz, timings)
    empty = int((recs.items[:, 0] < 0).sum()) if len(recs.items) else 0
    result.empty_lists, result.popular_items = empty, len(pop_ids)
    if store is None:
        n = sum(1 for _ in lists)
        timings["serialise"] = time.perf_counter() - stage
        log.info("dry run: %s lists computed, nothing written", n)
    else:
        if progress:
            from tqdm import tqdm

            lists = tqdm(lists, total=data.n_users, desc="publish", unit="user")
        meta = run_meta(loaded, params, timings, peaks, **telemetry.meta_fields(empty, len(pop_ids)))
        result.published = publish(store, run_id, lists, popular, meta, keep=keep, token=token,
                                   users=data.n_users, force=force, allow_eviction=allow_eviction)
        timings["publish"] = time.perf_counter() - stage
    timings["total"] = time.perf_counter() - started
    log.info("stage timings: %s", ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    if empty:
        log.warning("%s users have an empty list", empty)
    return result
