"""``evaluate``: every row of the comparison table in one run, on one fold of the split."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import numpy as np

from batch.evaluation import baselines
from batch.evaluation.evaluate_temporal import DEFAULT_ALS_POP, evaluate_temporal
from batch.evaluation.protocol import ModelCache, fold_for, sample_users, score_lists, svd_errors
from batch.evaluation.split import split_ratings
from batch.models.ease import train_ease
from batch.movielens import Movies, Ratings
from batch.params import Params

log = logging.getLogger(__name__)

PROTOCOLS = ("random", "temporal")
DEFAULT_EASE_L2 = 500.0  # Steck's ML-20M value; `tune` chooses it on validation


def evaluate(ratings: Ratings, movies: Movies, params: Params, *, original: Params | None = None,
             ease_l2: float = DEFAULT_EASE_L2, phase: str = "test", k: int = 50, seed: int = 42,
             original_users: int = 200) -> dict:
    """Fit every model on the fitted part, score every row on ``phase``; return a JSON-ready report.

    ``params`` is the default pipeline (normally the tuned file); ``original`` the original
    project's (built-in defaults, SVD ranker).  Rows under the fair protocol score all users
    with a relevant held-out movie and never recommend a fitted movie; the two
    ``original protocol`` rows score ``original_users`` sampled users and keep fitted movies.
    """
    started = time.perf_counter()
    original = original or Params(ranker="svd")
    split = split_ratings(ratings, seed=seed)
    fold = fold_for(ratings, split, phase)
    data, users = fold.data, fold.users()
    cache = ModelCache(fold, movies)
    ours, theirs = cache.models(params), cache.models(original)
    rows: list[dict] = []

    def add(key: str, name: str, make, who: np.ndarray = users, protocol: str = "fair", svd=None) -> None:
        begun = time.perf_counter()
        recs = make(who)
        row = {"key": key, "name": name, "protocol": protocol, "users": len(who),
               "curves": score_lists(fold, who, recs, k), "seconds": round(time.perf_counter() - begun, 3)}
        if svd is not None:
            row.update(svd_errors(fold, svd))
        rows.append(row)
        log.info("%s: P@10 %.4f (%s users, %.1fs)", name, row["curves"]["precision"][min(9, k - 1)],
                 len(who), row["seconds"])

    add("popularity", "popularity (>=100 ratings, by mean)",
        lambda u: baselines.global_ranking(theirs.popularity, data.matrix, u, k))
    add("most_rated", "most-rated", lambda u: baselines.most_rated(data, u, k))
    add("content", "TF-IDF content only", lambda u: baselines.content_only(ours, data, u, k, params))
    add("als_original", "ALS only (original params)", lambda u: baselines.als_only(theirs, data, u, k))
    add("als", "ALS only (tuned)", lambda u: baselines.als_only(ours, data, u, k))
    add("svd_full", "SVD rating, full catalogue", lambda u: baselines.svd_full(ours, data, u, k),
        svd=ours.svd)
    ease = cache.timed("fit_ease", lambda: train_ease(data.matrix, ease_l2))
    add("ease", f"EASE (l2={ease_l2:g})", lambda u: baselines.ease(ease, data, u, k))
    add("original", "original pipeline (ALS+TF-IDF -> SVD)", lambda u: baselines.two_stage(
        theirs, data, u, k, original), svd=theirs.svd)
    add("default", f"default pipeline ({params.ranker})", lambda u: baselines.two_stage(
        ours, data, u, k, params), svd=ours.svd)
    sampled = sample_users(users, original_users, seed)
    add("original@original", "original pipeline, original protocol", lambda u: baselines.two_stage(
        theirs, data, u, k, original, exclude_seen=False), sampled, "original")
    add("default@original", "default pipeline, original protocol", lambda u: baselines.two_stage(
        ours, data, u, k, params, exclude_seen=False), sampled, "original")
    seconds = time.perf_counter() - started
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "protocol": {
            "name": "random",
            "split": "60/20/20 of ratings, stratified by user (sklearn train_test_split: test first, "
                     "then validation out of the rest)",
            "seed": seed, "phase": phase,
            "fit_on": "train" if phase == "validation" else "train+validation",
            "sizes": {"train": len(split.train), "validation": len(split.validation),
                      "test": len(split.test)},
            "relevance": f"held-out rating >= {fold.threshold:g}",
            "fair": "every user with a relevant held-out movie; fitted movies never recommended",
            "original": f"{len(sampled)} users sampled (seed {seed}); fitted movies not excluded",
            "users": len(users), "catalogue": data.n_items, "k": k,
        },
        "params": {"default": params.to_dict(), "original": original.to_dict(), "ease_l2": ease_l2},
        "rows": rows,
        "timings": {**{n: round(v, 2) for n, v in cache.timings.items()}, "total": round(seconds, 2)},
    }


def evaluate_protocols(ratings: Ratings, movies: Movies, params: Params,
                       protocols: tuple[str, ...] = PROTOCOLS, *, ease_l2: float = DEFAULT_EASE_L2,
                       als_pop: float | None = None,
                       phase: str = "test", original_users: int = 200) -> dict:
    """Run ``evaluate`` under each protocol (``random``, ``temporal``); one JSON-ready document."""
    started = time.perf_counter()
    out = {}
    for name in protocols:
        if name == "random":
            out[name] = evaluate(ratings, movies, params, ease_l2=ease_l2, phase=phase,
                                 original_users=original_users)
        elif name == "temporal":
            out[name] = evaluate_temporal(ratings, movies, params, ease_l2=ease_l2, phase=phase,
                                          als_pop=DEFAULT_ALS_POP if als_pop is None else als_pop)
        else:
            raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    return {"created_at": datetime.now(UTC).isoformat(timespec="seconds"), "protocols": out,
            "seconds": round(time.perf_counter() - started, 1)}
