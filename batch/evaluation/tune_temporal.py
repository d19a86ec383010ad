"""``tune --protocol temporal``: refine the tuned file on the temporal protocol's validation phase.

Starts from the parameters ``tune`` chose on the random split and, fitting on the earliest
80% of ratings and scoring the next 10% (test is never read), chooses:

1. the popular (cold-start) list, for cold users (:func:`batch.evaluation.fallback.choose_fallback`);
2. the ALS + popularity baseline's weight, for warm users;
3. the ranking blend (SVD weight, scale, popularity term) for warm users, among the blends that
   keep the default pipeline ahead of the best of ALS alone and EASE on the random split's
   validation phase by ``RANDOM_MARGIN`` in both P@10 and NDCG@10 (defaults must serve both
   protocols; within that constraint the temporal one decides).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from itertools import product

import numpy as np

from batch import pipeline
from batch.evaluation import baselines
from batch.evaluation.fallback import choose_fallback
from batch.evaluation.metrics import at_10, by_p10, ranking_curves
from batch.evaluation.protocol import ModelCache, fold_for, pad, phase_parts
from batch.evaluation.split import Fold, split_ratings
from batch.evaluation.temporal import cold_users, split_by_time
from batch.models.ease import train_ease
from batch.movielens import Movies, Ratings
from batch.params import Params

log = logging.getLogger(__name__)

ALS_POP_WEIGHTS = (0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0, 3.0)
RANDOM_MARGIN = 1.02  # a blend must beat the best of ALS and EASE by 2% on random validation
BLENDS = tuple({"blend_svd": s, "blend_scale": c, "blend_pop": p}
               for s, c, p in product((0.5, 1.0, 1.5, 2.0), (1.0, 2.0), (0.0, 0.1, 0.2, 0.3, 0.4)))


def _metrics(fold: Fold, users: np.ndarray, recs: np.ndarray) -> dict:
    relevant = fold.relevant()[users]  # padded below: @10 even for a shorter list
    return at_10(ranking_curves(pad(recs, 10), relevant, fold.n_relevant[users], fold.data.n_items))


def _named(key: tuple) -> dict:
    return dict(zip(("precision@10", "ndcg@10"), key, strict=True))


def tune_temporal(ratings: Ratings, movies: Movies, base: Params, ease_l2: float, seed: int = 42,
                  blends: tuple = BLENDS, weights: tuple = ALS_POP_WEIGHTS) -> dict:
    """Choose the fallback, the ALS + popularity weight and the blend on validation; return the section."""
    started = time.perf_counter()
    split = split_by_time(ratings)
    fold = fold_for(ratings, split, "validation")
    data, warm = fold.data, fold.users()
    cold = cold_users(data, ratings.take(phase_parts(split, "validation")[1]))
    fallback, trials, guard = choose_fallback(data, cold, base)
    trials = [{"stage": "fallback", **t} for t in trials]
    base = base.with_(**fallback)
    cache = ModelCache(fold, movies)
    models = cache.models(base)

    def warm_trial(stage: str, recs: np.ndarray, **changes) -> tuple:
        metrics = _metrics(fold, warm, recs)
        trials.append({"stage": stage, **changes, **metrics})
        log.info("%s %s: P@10 %.4f NDCG@10 %.4f", stage, changes, *by_p10(metrics))
        return by_p10(metrics)

    als_pop = max(weights, key=lambda w: warm_trial(
        "als_pop", baselines.als_popularity(models, data, warm, 10, w), weight=w))
    # The random split's validation phase: ALS alone and EASE are the bar every blend must clear.
    rfold = fold_for(ratings, split_ratings(ratings, seed=seed), "validation")
    rusers, rcache = rfold.users(), ModelCache(rfold, movies)
    rmodels = rcache.models(base)
    als_key = by_p10(_metrics(rfold, rusers, baselines.als_only(rmodels, rfold.data, rusers, 10)))
    ease_key = by_p10(_metrics(rfold, rusers, train_ease(rfold.data.matrix, ease_l2).recommend(
        rusers, rfold.data.matrix, 10)[0]))
    bar = tuple(max(a, e) for a, e in zip(als_key, ease_key, strict=True))
    cands = pipeline.candidates(models, data, warm, base)
    rcands = pipeline.candidates(rmodels, rfold.data, rusers, base)
    scored = []
    for blend in blends:
        q = base.with_(**blend)
        temporal = warm_trial("blend", pipeline.rank(models, warm, cands, q.with_(top_n=10)).items, **blend)
        random = _metrics(rfold, rusers, pipeline.rank(rmodels, rusers, rcands, q.with_(top_n=10)).items)
        trials[-1]["random"] = random
        scored.append((temporal, by_p10(random), q))
    eligible = [s for s in scored if all(r >= b * RANDOM_MARGIN for r, b in zip(s[1], bar, strict=True))]
    temporal_key, random_key, chosen = max(eligible or scored, key=lambda s: s[0])
    seconds = time.perf_counter() - started
    log.info("temporal tune: warm P@10 %.4f (random %.4f, bar %.4f) in %.0fs", temporal_key[0],
             random_key[0], bar[0], seconds)
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "objective": "temporal validation P@10 (ties: NDCG@10): cold users for the fallback, warm users "
                     "for the blend, which must also beat the best of ALS alone and EASE by "
                     f"{RANDOM_MARGIN - 1:.0%} in P@10 and NDCG@10 on random validation",
        "protocol": {"split": "global by time: train 80% / validation 10% (test 10% never read)",
                     "validation_cut": split.validation_cut, "test_cut": split.test_cut,
                     "fit_on": "train", "scored_on": "validation",
                     "users": {"warm": len(warm), "cold": len(cold)}, "relevance": "rating >= 4"},
        "chosen": {**fallback, **{k: getattr(chosen, k) for k in blends[0]}},
        "fallback_recency_guard": guard,
        "als_pop": als_pop,
        "validation": {"warm_default": _named(temporal_key), "random_default": _named(random_key),
                       "random_best_of_als_and_ease": _named(bar)},
        "seconds": round(seconds, 1),
        "trials": trials,
    }
