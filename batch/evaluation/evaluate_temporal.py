"""``evaluate`` under the temporal protocol: warm users get every model, cold users the popular list.

One global time split (:mod:`batch.evaluation.temporal`).  Warm users (ratings before the
cut) are scored on the default pipeline and every baseline; cold users (none before it) on
exactly the list the batch publishes (:func:`batch.pipeline.popular` on the same models);
*all* stacks both, so every metric is the user-weighted mean.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from functools import partial

import numpy as np
import scipy.sparse as sp

from batch import pipeline
from batch.evaluation import baselines
from batch.evaluation.fallback import describe, fallback_comparison, served_lists
from batch.evaluation.protocol import ModelCache, pad, phase_parts, rounded_curves
from batch.evaluation.split import make_fold
from batch.evaluation.temporal import cold_users, split_by_time
from batch.models.ease import train_ease
from batch.movielens import Movies, Ratings
from batch.params import Params

log = logging.getLogger(__name__)

DEFAULT_ALS_POP = 0.3  # ALS + popularity row's weight when the tuned file has none


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def evaluate_temporal(ratings: Ratings, movies: Movies, params: Params, *, original: Params | None = None,
                      ease_l2: float = 500.0, als_pop: float = DEFAULT_ALS_POP, phase: str = "test",
                      k: int = 50) -> dict:
    """Fit every model before the cut, score warm, cold and all users on ``phase``; a JSON-ready report."""
    started = time.perf_counter()
    original = original or Params(ranker="svd")
    split = split_by_time(ratings)
    fit, held = phase_parts(split, phase)
    fold = make_fold(ratings, fit, held)
    data, warm = fold.data, fold.users()
    cold = cold_users(data, ratings.take(held))
    cache = ModelCache(fold, movies)
    ours, theirs = cache.models(params), cache.models(original)
    relevant = {"warm": (fold.relevant()[warm], fold.n_relevant[warm]),
                "cold": (cold.relevant, cold.n_relevant)}
    served: dict[str, np.ndarray] = {}
    rows: list[dict] = []

    def add(key: str, name: str, segment: str, make) -> None:
        begun = time.perf_counter()
        served[key] = recs = pad(make(), k)
        rows.append({"key": key, "name": name, "segment": segment, "users": len(recs),
                     "curves": rounded_curves(recs, *relevant[segment], data.n_items),
                     "seconds": round(time.perf_counter() - begun, 3)})
        log.info("%s (%s): P@10 %.4f, %s users", name, segment, rows[-1]["curves"]["precision"][9], len(recs))

    # What the API serves a user without a list: the published popular list, as is.
    published = pipeline.popular(ours, params.top_n)[0]
    seed_list = pipeline.popular(theirs, original.top_n)[0]
    add("fallback@cold", f"published fallback ({describe(params)})", "cold",
        lambda: served_lists(published, len(cold), k))
    add("popularity@cold", f"original fallback ({describe(original)})", "cold",
        lambda: served_lists(seed_list, len(cold), k))
    add("popularity", "popularity (>=100 ratings, by mean)", "warm",
        lambda: baselines.global_ranking(theirs.popularity, data.matrix, warm, k))
    add("most_rated", "most-rated", "warm", lambda: baselines.most_rated(data, warm, k))
    add("fallback", "published fallback list, rated movies removed", "warm",
        lambda: baselines.global_ranking(ours.popularity, data.matrix, warm, k))
    add("als", "ALS only (tuned)", "warm", lambda: baselines.als_only(ours, data, warm, k))
    add("als_pop", f"ALS + popularity (weight {als_pop:g})", "warm",
        lambda: baselines.als_popularity(ours, data, warm, k, als_pop))
    ease = cache.timed("fit_ease", lambda: train_ease(data.matrix, ease_l2))
    add("ease", f"EASE (l2={ease_l2:g})", "warm", lambda: baselines.ease(ease, data, warm, k))
    add("original", "original pipeline (ALS+TF-IDF -> SVD)", "warm",
        lambda: baselines.two_stage(theirs, data, warm, k, original))
    add("default", f"default pipeline ({params.ranker})", "warm",
        lambda: baselines.two_stage(ours, data, warm, k, params))
    relevant["all"] = (sp.vstack([relevant["warm"][0], relevant["cold"][0]]).tocsr(),
                       np.concatenate([relevant["warm"][1], relevant["cold"][1]]))
    for key, cold_key, name in (
            ("default", "fallback@cold", "default pipeline + published fallback (the product)"),
            ("original", "popularity@cold", "original pipeline + original fallback (the seed)"),
            ("als", "fallback@cold", "ALS only (tuned) + published fallback"),
            ("als_pop", "fallback@cold", "ALS + popularity + published fallback"),
            ("ease", "fallback@cold", "EASE + published fallback"),
            ("fallback", "fallback@cold", "published fallback list for everyone"),
            ("popularity", "popularity@cold", "original fallback list for everyone")):
        add(f"{key}@all", name, "all", partial(np.concatenate, [served[key], served[cold_key]]))
    comparison = fallback_comparison(ratings, split, params, phase)
    seconds = time.perf_counter() - started
    sizes = {"train": len(split.train), "validation": len(split.validation), "test": len(split.test)}
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "protocol": {
            "name": "temporal",
            "split": "one global split by time: train = earliest 80% of ratings, validation = next 10%, "
                     "test = latest 10% (ratings sharing a timestamp stay on one side)",
            "cuts": {"validation": split.validation_cut, "test": split.test_cut,
                     "validation_utc": _day(split.validation_cut), "test_utc": _day(split.test_cut)},
            "phase": phase, "fit_on": "train" if phase == "validation" else "train+validation",
            "sizes": sizes, "relevance": f"held-out rating >= {fold.threshold:g}",
            "warm": "users with ratings before the cut and a relevant held-out movie; rated movies never "
                    "recommended",
            "cold": "users with no rating before the cut and a relevant held-out movie: served the "
                    "published popular list as is",
            "all": "warm and cold users together (user-weighted)",
            "users": {"warm": len(warm), "cold": len(cold), "all": len(warm) + len(cold)},
            "heldout_ratings": {"warm": int(np.isin(ratings.user_ids[held], data.user_ids).sum()),
                                "cold": int((~np.isin(ratings.user_ids[held], data.user_ids)).sum())},
            "catalogue": data.n_items, "k": k,
        },
        "params": {"default": params.to_dict(), "original": original.to_dict(), "ease_l2": ease_l2,
                   "als_pop": als_pop},
        "published_fallback": {"movie_ids": data.item_ids[published].tolist(),
                               "scores": [round(float(s), 6) for s in ours.popularity[published]]},
        "fallback": comparison,
        "rows": rows,
        "timings": {**{n: round(v, 2) for n, v in cache.timings.items()}, "total": round(seconds, 2)},
    }
