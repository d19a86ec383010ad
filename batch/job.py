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
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from batch import pipeline, telemetry
from batch.download import ML_1M, Release, download, find_dataset
from batch.interactions import Interactions
from batch.lifecycle import PublishReport, publish
from batch.models.svd_process import SVDProcess
from batch.movielens import Movies
from batch.movielens_ratings import load_dir
from batch.params import SIMILAR_N, SIMILAR_SHRINK, SIMILAR_WEIGHTS, SPARE_ITEMS, Params
from batch.store import RunStore
from lookup_api.contract.items import encode_catalog, encode_lists, encode_one, item_heads
from lookup_api.contract.keys import Keys, new_run_id
from lookup_api.contract.meta import F, RunMeta

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
             peaks: dict[str, float] | None = None, **extra) -> RunMeta:
    """Return the metadata recorded with a run (:class:`~lookup_api.contract.meta.RunMeta`)."""
    now = datetime.now(UTC)
    return RunMeta(
        created_at=now.isoformat(timespec="seconds"),
        created_ts=round(now.timestamp(), 3),
        dataset=loaded.release.name,
        dataset_dir=str(loaded.directory),
        dataset_sha256=dataset_checksum(loaded.directory, loaded.release),
        n_users=loaded.data.n_users,
        n_items=loaded.data.n_items,
        n_ratings=loaded.data.nnz,
        top_n=params.top_n,
        ranker=params.ranker,
        params=params.to_dict(),
        timings={k: round(v, 3) for k, v in timings.items()},
        peak_rss_mib=peaks or None,
        code_version=code_version(),
    ).with_(**extra)


@dataclass
class Extras:
    """The run's lists beyond the user lists and the popular list, ready to write."""

    lists: list[tuple[str, bytes]]
    genres: list[str]
    similar_movies: int


def hidden_columns(data: Interactions, hidden: frozenset[int]) -> np.ndarray:
    """Return a boolean (n_items,) mask of the columns whose movie is hidden."""
    return np.isin(data.item_ids, np.fromiter(hidden, dtype=np.int64, count=len(hidden)))


def drop_hidden(items: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return ranked column indices with hidden columns replaced by -1 (the encoder skips them)."""
    return np.where((items >= 0) & mask[np.maximum(items, 0)], -1, items) if mask.any() else items


def top_visible(scores: np.ndarray, n: int, mask: np.ndarray) -> np.ndarray:
    """Return the ``n`` best columns by ``scores`` (finite only) that are not hidden, best first."""
    from batch.models.popularity import top_popular

    items, _ = top_popular(np.where(mask, -np.inf, scores), n)
    return items


def popular_list(models, heads: list[str], n: int, hidden: np.ndarray) -> tuple[bytes, int]:
    """Return the published popular list (its ``n`` best visible movies) and its length."""
    items = top_visible(models.popularity.scores, n, hidden)
    return encode_one(heads, items, models.popularity.scores[items], models.svd.baseline(items)), len(items)


def extras_meta(extras: Extras, params: Params, hidden: np.ndarray) -> dict:
    """Return the meta fields that describe a run's extra lists and what it left out."""
    return {F.stored_n: params.top_n + SPARE_ITEMS, F.genres: extras.genres,
            F.similar_movies: extras.similar_movies, F.hidden_at_publish: int(hidden.sum())}


def run_extras(keys: Keys, run_id: str, data: Interactions, movies: Movies, models, params: Params,
               heads: list[str], hidden: np.ndarray) -> Extras:
    """Return the per-genre popular lists and the "more like this" lists of a run (:mod:`batch.related`).

    Per genre: the popular rule's scores restricted to the genre's movies.  Similar: the blend
    :data:`~batch.params.SIMILAR_WEIGHTS` of co-occurrence of likes, ALS item factors and TF-IDF
    genres; ``predicted_rating`` is SVD's baseline (mu + b_i), as in the popular list.
    """
    from batch.related import similar_items, tfidf_genres

    stored = params.top_n + SPARE_ITEMS
    genres_of = pipeline.item_genres(data, movies)
    base = models.svd.baseline(np.arange(data.n_items))
    out: list[tuple[str, bytes]] = [(keys.catalog(run_id), encode_catalog(data.item_ids, movies))]
    names = sorted({g for gs in genres_of for g in gs})
    for genre in names:
        inside = np.fromiter((genre in gs for gs in genres_of), dtype=bool, count=len(genres_of))
        items = top_visible(np.where(inside, models.popularity.scores, -np.inf), stored, hidden)
        out.append((keys.genre_popular(run_id, genre),
                    encode_one(heads, items, models.popularity.scores[items], base[items])))
    factors = getattr(getattr(models, "als", None), "item_factors", None)
    weights = {s: w for s, w in SIMILAR_WEIGHTS.items() if w and (s != "factors" or factors is not None)}
    prior = models.counts / max(float(models.counts.max()), 1.0) * 0.999
    likes = data.liked(params.like_threshold)
    sim, scores = similar_items(data.n_items, SIMILAR_N + SPARE_ITEMS, likes=likes, factors=factors,
                                genres=tfidf_genres(genres_of), weights=weights, prior=prior,
                                shrink=SIMILAR_SHRINK)
    sim = drop_hidden(sim, hidden)
    ratings = base[np.maximum(sim, 0)]
    n_similar = 0
    for column, (movie_id, payload) in enumerate(encode_lists(data.item_ids, sim, scores, ratings, heads)):
        if not hidden[column]:  # a hidden title gets no list of its own either
            out.append((keys.similar(run_id, movie_id), payload))
            n_similar += 1
    return Extras(out, names, n_similar)  # the catalog first: every list after it refers to it


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
    lock_ttl: float = 60.0,
    durable: Callable[[], AbstractContextManager] = nullcontext,
    force: bool = False,
    allow_eviction: bool = False,
) -> JobResult:
    """Train on every rating, rank for every user, and publish (``store=None``: dry run).

    The batch lock is held for the whole run: ``token``, a lock held already, else taken here for
    ``lock_ttl`` seconds (renewed by a heartbeat; refused while another run holds it); publishing
    is refused if it was lost meanwhile.  The final timings are written within ``durable()`` (the
    embedded server's fsync).  ``force``: publish a run the publish gate refuses;
    ``allow_eviction``: publish to a Redis whose maxmemory-policy may evict keys
    (:func:`batch.lifecycle.publish`).
    """
    if store is not None and token is None:
        with store.lock(ttl=lock_ttl) as token:
            return run_job(data_dir, params, store, keep=keep, url=url, progress=progress, release=release,
                           token=token, durable=durable, force=force, allow_eviction=allow_eviction)
    started = time.perf_counter()
    with SVDProcess() as svd_process:  # starts now: its imports overlap the load
        loaded = load_stage(data_dir, release, url)
        data, timings = loaded.data, {"load": loaded.seconds}
        peaks = {"load": peak_rss_mib()}  # the process's high-water mark after each stage
        models = pipeline.Models.fit(data, loaded.movies, params, svd_process=svd_process)
    peaks.update(train=peak_rss_mib(), svd_child=peak_rss_mib(resource.RUSAGE_CHILDREN))
    stored = params.top_n + SPARE_ITEMS  # spare items: hidden titles and ?exclude= still fill top_n
    recs = pipeline.recommend(models, data, params.with_(top_n=stored))
    peaks["recommend"] = peak_rss_mib()
    timings.update(models.timings)

    stage = time.perf_counter()
    run_id = new_run_id()
    hidden_ids = store.hidden_ids() if store is not None else frozenset()
    hidden = hidden_columns(data, hidden_ids)  # titles hidden now are published nowhere
    heads = item_heads(data.item_ids, loaded.movies)
    popular, n_popular = popular_list(models, heads, stored, hidden)
    items = drop_hidden(recs.items, hidden)
    lists = encode_lists(data.user_ids, items, recs.scores, recs.ratings, heads)
    extras = run_extras(store.keys if store is not None else Keys(), run_id, data, loaded.movies, models,
                        params, heads, hidden)
    timings["related"] = time.perf_counter() - stage
    result = JobResult(run_id, data.n_users, data.n_items, data.nnz, timings)
    empty = int((items.max(axis=1) < 0).sum()) if len(items) else 0
    result.empty_lists, result.popular_items = empty, n_popular
    if store is None:
        n = sum(1 for _ in lists)
        timings["serialise"] = time.perf_counter() - stage
        log.info("dry run: %s lists computed, nothing written", n)
    else:
        if progress:
            from tqdm import tqdm

            lists = tqdm(lists, total=data.n_users, desc="publish", unit="user")
        meta = run_meta(loaded, params, timings, peaks, **telemetry.meta_fields(empty, n_popular),
                        **extras_meta(extras, params, hidden))
        result.published = publish(store, run_id, lists, popular, meta, keep=keep, token=token,
                                   users=data.n_users, force=force, allow_eviction=allow_eviction,
                                   extra=extras.lists)
        timings["publish"] = time.perf_counter() - stage
    timings["total"] = time.perf_counter() - started
    if store is not None:
        with durable():  # on disk, the flip and all before it, before the run is reported published
            store.set_timings(run_id, timings)
    log.debug("stage timings: %s", ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    if empty:
        log.warning("%s users have an empty list", empty)
    return result
