"""The two-stage pipeline, pure: train models, gather candidates, rank, keep top-N.

Arrays in, arrays out, over all users at once (chunked matrix operations, no per-user
Python loop).  Indices are the row/column positions of an :class:`Interactions`.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from batch.interactions import Interactions
from batch.models import fit_source
from batch.models.als import ALSModel
from batch.models.content import ContentModel
from batch.models.ease import EASEModel
from batch.models.items import ItemFeatures
from batch.models.items import fit as fit_items
from batch.models.popularity import PopularityModel
from batch.models.svd import SVDModel
from batch.models.svd_process import SVDProcess
from batch.models.topn import for_each_chunk, top_n
from batch.movielens import Movies
from batch.params import Params

log = logging.getLogger(__name__)
ALS_FLOOR = 1e-3  # ALS scores at or below this count as "very unlikely" in the product blend


def model_key(name: str, params: Params) -> tuple:
    """The cache key of model ``name`` under ``params``: its name and every setting its fit receives."""
    return (name, *sorted(params.kwargs(name).items())) if name != "items" else (name,)


@dataclass
class Models:
    """Everything the pipeline fits, aligned with one :class:`Interactions`; built by :meth:`fit`."""

    als: ALSModel
    content: ContentModel
    svd: SVDModel
    popularity: PopularityModel
    counts: np.ndarray  # (n_items,) rating counts in the fitted data
    items: ItemFeatures | None = None  # freshness and release year (blend terms)
    ease: EASEModel | None = None
    timings: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, data: Interactions, movies: Movies, params: Params, *,
            svd_process: SVDProcess | None = None, cache: dict | None = None) -> Models:
        """Fit every model ``params``' pipeline uses on ``data``: ALS, TF-IDF content, SVD, popularity
        and EASE when the pipeline uses it (:meth:`Params.needs_ease`).

        With an active ``svd_process``, SVD is fitted in that child process while the rest is fitted
        here (same models as in-process fits with the same seed).  ``cache`` (evaluation): a dict
        that keeps each model per its settings, so configurations share fits.
        """
        cache = {} if cache is None else cache
        timings: dict[str, float] = {}

        def get(name: str, fit):
            key = model_key(name, params)
            if key not in cache:
                cache[key] = fit()
            return cache[key]

        svd_key = model_key("svd", params)
        background = svd_process is not None and svd_process.active and svd_key not in cache
        if background:
            svd_process.submit(data.matrix, data.user_ids, data.item_ids, **params.kwargs("svd"))
        sklearn = _prefetch("sklearn.feature_extraction.text")
        # With SVD on the other core, a second ALS thread would only make both fits wait for each other;
        # ALS takes both cores once the SVD child is done.
        started = time.perf_counter()
        als = get("als", lambda: fit_source("als", data, params, threads=1 if background else 0,
                                            widen=svd_process.done if background else None))
        timings["train_als"] = time.perf_counter() - started
        started = time.perf_counter()
        sklearn.join()
        content = get("content", lambda: fit_source("content", data, params, item_genres(data, movies)))
        popular = get("popularity", lambda: fit_source("popularity", data, params))
        ease = get("ease", lambda: fit_source("ease", data, params)) if params.needs_ease() else None
        timings["train_content"] = time.perf_counter() - started  # content, popularity and EASE
        if background:
            started = time.perf_counter()
            cache[svd_key] = svd_process.result()
            timings["train_svd"] = svd_process.fit_seconds  # in the child, side by side with the above
            timings["train_svd_wait"] = time.perf_counter() - started
        started = time.perf_counter()
        svd = get("svd", lambda: fit_source("svd", data, params))
        if not background:
            timings["train_svd"] = time.perf_counter() - started
        counts = np.bincount(data.matrix.indices, minlength=data.n_items).astype(np.int64)
        items = get("items", lambda: fit_items(data, item_titles(data, movies)))
        return cls(als, content, svd, popular, counts, items, ease, timings)


@dataclass
class Recommendations:
    """Ranked lists, (n_users, top_n) each: column indices (-1 padded), ranking scores, SVD ratings."""

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    ratings: np.ndarray  # SVD's predicted rating of each item, clipped to the rating scale


def item_titles(data: Interactions, movies: Movies) -> list[str]:
    """Return the title of each column of ``data`` (empty for unknown movies)."""
    lookup = movies.lookup()
    return [lookup.get(int(m), ("", []))[0] for m in data.item_ids]


def item_genres(data: Interactions, movies: Movies) -> list[list[str]]:
    """Return the genre list of each column of ``data`` (empty for unknown movies)."""
    lookup = movies.lookup()
    return [lookup.get(int(m), ("", []))[1] for m in data.item_ids]


def _prefetch(module: str) -> threading.Thread:
    """Import ``module`` on a thread (while ALS's solver runs without the GIL)."""
    thread = threading.Thread(target=importlib.import_module, args=(module,), name=f"import-{module}",
                              daemon=True)
    thread.start()
    return thread


def candidates(models: Models, data: Interactions, users: np.ndarray, params: Params, *,
               exclude_seen: bool = True) -> np.ndarray:
    """Return (len(users), candidates + content_candidates + ease_candidates) unseen ids, -1 padded.

    The union of the ALS top ``candidates``, the ``content_candidates`` items most similar
    (TF-IDF genres) to the user's liked movies and EASE's top ``ease_candidates``.
    ``exclude_seen=False`` keeps rated movies (only to reproduce the original protocol).
    """
    users = np.asarray(users)
    seen = data.matrix if exclude_seen else None
    parts = [models.als.recommend(users, seen, params.candidates)[0]]
    if params.content_candidates:
        parts.append(models.content.recommend(users, seen, params.content_candidates)[0])
    if params.ease_candidates and models.ease is not None:
        parts.append(models.ease.recommend(users, seen, params.ease_candidates)[0])
    if len(parts) == 1:
        return parts[0]
    both = np.sort(np.concatenate(parts, axis=1), axis=1)
    duplicate = np.zeros_like(both, dtype=bool)
    duplicate[:, 1:] = both[:, 1:] == both[:, :-1]
    both[duplicate] = -1
    return both


def score_candidates(models: Models, users: np.ndarray, cands: np.ndarray, params: Params) -> np.ndarray:
    """Score candidate ids (n_users, k) with the configured ranker; -1 ids get -inf.

    ``svd``: SVD's predicted rating.  ``blend``, ``linear`` form: blend_svd * rating
    + blend_als * ALS score + blend_pop * log1p(rating count).  ``product`` form, a log-score
    of P(rates it) x P(rating >= 4 | rated): blend_als * log(ALS score, floored at 1e-3)
    + blend_svd * log sigmoid((rating - blend_center) / blend_scale) + blend_pop * log1p(count).
    Both forms add blend_ease * EASE score (0 for movies outside EASE's item set), blend_fresh *
    freshness and blend_year * release year (:mod:`batch.models.items`).  ``z`` form: the weighted
    sum of the SVD rating, ALS score, EASE score, log(1 + the published popular list's score),
    freshness and release year, each standardised over the user's candidates (mean 0, variance 1),
    so that the weights do not depend on each term's scale.
    """
    scores = models.svd.score(users, cands)
    if params.ranker == "blend" and params.blend_form == "z":
        return _z_blend(models, users, cands, params, scores)
    if params.ranker == "blend":
        product = params.blend_form == "product"
        if product:
            scores = -np.logaddexp(0.0, -(scores - params.blend_center) / params.blend_scale)
        scores = params.blend_svd * scores
        if params.blend_als:
            als = models.als.score(users, cands)
            als = np.log(np.maximum(als, ALS_FLOOR)) if product else als
            scores = scores + params.blend_als * als
        if params.blend_ease and models.ease is not None:
            ease = models.ease.score(users, cands)
            scores = scores + params.blend_ease * np.where(np.isfinite(ease), ease, 0.0)
        if params.blend_pop:
            scores = scores + params.blend_pop * np.log1p(models.counts[np.maximum(cands, 0)])
        for weight, feature in _item_terms(models, params):
            scores = scores + weight * feature[np.maximum(cands, 0)]
    return np.where(cands >= 0, scores, -np.inf)


def _standardised(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Standardise each row of ``values`` over its ``valid`` entries (others: 0)."""
    values = np.where(valid, values, 0.0).astype(np.float64)
    n = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    mean = values.sum(axis=1, keepdims=True) / n
    var = (np.where(valid, values - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / n
    return np.where(valid, (values - mean) / np.sqrt(var + 1e-12), 0.0)


def _z_blend(models: Models, users: np.ndarray, cands: np.ndarray, params: Params,
             svd: np.ndarray) -> np.ndarray:
    valid = cands >= 0
    total = np.zeros(cands.shape, dtype=np.float64)
    if params.blend_svd:
        total += params.blend_svd * _standardised(svd, valid)
    if params.blend_als:
        total += params.blend_als * _standardised(models.als.score(users, cands), valid)
    if params.blend_ease and models.ease is not None:
        ease = models.ease.score(users, cands)
        inside = np.isfinite(ease)  # outside EASE's item set: the user's lowest EASE score
        low = np.min(np.where(inside & valid, ease, np.inf), axis=1, keepdims=True)
        ease = np.where(inside, ease, np.where(np.isfinite(low), low, 0.0))
        total += params.blend_ease * _standardised(ease, valid)
    if params.blend_pop:
        pop = np.log1p(np.maximum(models.popularity.scores, 0.0))[np.maximum(cands, 0)]
        total += params.blend_pop * _standardised(pop, valid)
    for weight, feature in _item_terms(models, params):
        total += weight * _standardised(feature[np.maximum(cands, 0)], valid)
    return np.where(valid, total, -np.inf)


def _item_terms(models: Models, params: Params) -> list[tuple[float, np.ndarray]]:
    """The item-feature terms in use: (weight, (n_items,) feature)."""
    terms = [(params.blend_fresh, "fresh"), (params.blend_year, "year")]
    return [(w, getattr(models.items, name)) for w, name in terms if w and models.items is not None]


def rank(models: Models, users: np.ndarray, cands: np.ndarray, params: Params,
         chunk: int = 512) -> Recommendations:
    """Score the candidates and keep each user's top ``top_n``, best first, with SVD's rating.

    Chunks of ``chunk`` users run on every core; each gathers (chunk, candidates, factors) arrays.
    """
    users = np.asarray(users)
    n = min(params.top_n, cands.shape[1])
    items = np.full((len(users), n), -1, dtype=np.int64)
    scores = np.full((len(users), n), -np.inf, dtype=np.float32)
    ratings = np.full((len(users), n), -np.inf, dtype=np.float32)

    def work(sl: slice) -> None:
        top, scores[sl] = top_n(score_candidates(models, users[sl], cands[sl], params), n)
        items[sl] = np.where(top >= 0, np.take_along_axis(cands[sl], np.maximum(top, 0), axis=1), -1)
        ratings[sl] = models.svd.score(users[sl], items[sl], clip=True)

    for_each_chunk(work, len(users), chunk)
    return Recommendations(users, items, scores, ratings)


def recommend(models: Models, data: Interactions, params: Params,
              users: np.ndarray | None = None) -> Recommendations:
    """Run both stages for ``users`` (default: every user in ``data``)."""
    users = np.arange(data.n_users) if users is None else np.asarray(users)
    started = time.perf_counter()
    cands = candidates(models, data, users, params)
    mid = time.perf_counter()
    recs = rank(models, users, cands, params)
    models.timings["candidates"] = mid - started
    models.timings["rank"] = time.perf_counter() - mid
    log.info(
        "ranked %s users: %.1f candidates/user on average, candidates %.2fs, ranking %.2fs",
        len(users), float((cands >= 0).sum(axis=1).mean()) if len(users) else 0.0,
        mid - started, time.perf_counter() - mid,
    )
    return recs


def popular(models: Models, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the popular list, best first: item indices, popularity scores, SVD's mu + b_i (clipped)."""
    items, scores = models.popularity.top(n)
    return items, scores, models.svd.baseline(items)
