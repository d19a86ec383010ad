"""Choose the popular (cold-start) list on the temporal protocol: score candidate rules for cold users.

A cold user has no rating before the cut, so the product serves them the published popular
list as is (nothing to exclude).  Each rule is the same code the batch publishes with
(:func:`batch.pipeline.popular_scores` then :func:`batch.models.popularity.top_popular`).
"""

from __future__ import annotations

import logging

import numpy as np

from batch import pipeline
from batch.evaluation.metrics import at_10, by_p10, hits, ranking_curves
from batch.evaluation.protocol import phase_parts
from batch.evaluation.split import Split
from batch.evaluation.temporal import ColdUsers, cold_users
from batch.interactions import Interactions
from batch.models.popularity import top_popular
from batch.movielens import Ratings
from batch.params import Params

log = logging.getLogger(__name__)

BASE_RULES: tuple[dict, ...] = (
    {"popularity_rule": "mean", "popularity_min_count": 100},
    *({"popularity_rule": "damped", "popularity_damping": d} for d in (10.0, 100.0, 1000.0, 5000.0)),
    {"popularity_rule": "count"},
    {"popularity_rule": "liked"},
)
NEUTRAL = {"popularity_recency_days": 0.0, "popularity_damping": Params.popularity_damping,
           "popularity_min_count": Params.popularity_min_count}  # what a rule leaves unsaid
HALF_LIVES = (7.0, 14.0, 30.0, 60.0, 120.0, 240.0, 480.0)


def describe(params: Params) -> str:
    """Return a short name of ``params``' popularity rule, e.g. ``liked, half-life 60 d``."""
    rule = params.popularity_rule
    name = {"mean": f"mean rating, >= {params.popularity_min_count} ratings (original)",
            "damped": f"damped mean, strength {params.popularity_damping:g}",
            "count": "most rated", "liked": f"most ratings >= {params.like_threshold:g}"}[rule]
    if params.popularity_recency_days > 0:
        name += f", half-life {params.popularity_recency_days:g} d"
    return name


def served_lists(lists: np.ndarray, n_users: int, k: int) -> np.ndarray:
    """Return the one list ``lists`` (n,) repeated for ``n_users`` users, cut or -1 padded to ``k``."""
    row = np.full(k, -1, dtype=np.int64)
    row[: min(k, len(lists))] = lists[:k]
    return np.repeat(row[None, :], n_users, axis=0)


def score_cold(cold: ColdUsers, items: np.ndarray, n_items: int, k: int) -> dict[str, np.ndarray]:
    """Return the metric curves (k = 1..``k``) of serving ``items`` to every cold user."""
    return ranking_curves(served_lists(items, len(cold), k), cold.relevant, cold.n_relevant, n_items)


def _score_rules(data: Interactions, cold: ColdUsers, base: Params, rules: list[dict],
                 k: int = 10) -> list[dict]:
    out = []
    for changes in rules:
        params = base.with_(**{**NEUTRAL, **changes})
        items, _ = top_popular(pipeline.popular_scores(data, params), base.top_n)
        curves = score_cold(cold, items, data.n_items, k)
        out.append({"rule": describe(params), "changes": changes, "users": len(cold), **at_10(curves)})
        out[-1]["_hits"] = hits(served_lists(items, len(cold), 10), cold.relevant).mean(axis=1)
    return out


def _clean(trials: list[dict]) -> list[dict]:
    return [{k: v for k, v in t.items() if k != "_hits"} for t in trials]


def paired_gain(better: dict, base: dict) -> tuple[float, float]:
    """Return (mean, standard error) of the per-user P@10 difference between two scored rules."""
    diff = better["_hits"] - base["_hits"]
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0


def choose_fallback(data: Interactions, cold: ColdUsers, base: Params) -> tuple[dict, list[dict], dict]:
    """Pick the best base rule, then its best recency half-life; return (changes, trials, guard).

    Run it on the validation phase only: every choice maximises P@10 for cold users (ties:
    NDCG@10).  The half-life is adopted only when its per-user P@10 gain over the unweighted
    rule exceeds one standard error: a recency weight depends on how many ratings the last
    days hold, which differs between a validation cut and the nightly production data, so a
    gain within noise does not pay for it.
    """
    trials = _score_rules(data, cold, base, list(BASE_RULES))
    best = max(trials, key=by_p10)
    recency = [{**best["changes"], "popularity_recency_days": h} for h in HALF_LIVES]
    trials += _score_rules(data, cold, base, recency)
    weighted = max(trials[len(BASE_RULES):], key=by_p10)
    gain, error = paired_gain(weighted, best)
    chosen = weighted if gain > error else best
    log.info("fallback: %s, P@10 %.4f for %s cold users (original rule %.4f; best half-life %s: "
             "gain %.4f +- %.4f)", chosen["rule"], chosen["precision@10"], len(cold),
             trials[0]["precision@10"], weighted["changes"]["popularity_recency_days"], gain, error)
    guard = {"best_recency_rule": weighted["rule"], "over": best["rule"], "gain_p@10": round(gain, 5),
             "standard_error": round(error, 5), "adopted": chosen is weighted}
    return {"popularity_rule": "", **NEUTRAL, **chosen["changes"]}, _clean(trials), guard


def fallback_comparison(ratings: Ratings, split: Split, params: Params, phase: str) -> dict:
    """Compare the cold-start rules: the choice on validation, and the same rules on ``phase``."""
    fit, held = phase_parts(split, "validation")
    data = Interactions.from_ratings(ratings.take(fit))
    chosen, trials, guard = choose_fallback(data, cold_users(data, ratings.take(held)), params)
    doc = {"validation": trials, "recency_guard": guard, "chosen_on_validation": chosen,
           "published": {k: getattr(params, k) for k in chosen}, "published_rule": describe(params)}
    if phase != "validation":
        fit, held = phase_parts(split, phase)
        data = Interactions.from_ratings(ratings.take(fit))
        base = {k: v for k, v in chosen.items() if k != "popularity_recency_days"}
        recency = [{**base, "popularity_recency_days": h} for h in HALF_LIVES]
        rules = _score_rules(data, cold_users(data, ratings.take(held)), params, [*BASE_RULES, *recency])
        doc[phase] = _clean(rules)
    return doc
