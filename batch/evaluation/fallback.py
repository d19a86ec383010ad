"""Choose the popular (cold-start) list on the temporal protocol: score candidate rules for cold users.

A cold user has no rating before the cut, so the product serves them the published popular
list as is (nothing to exclude).  Each rule is the same code the batch publishes with
(:func:`batch.pipeline.popular_scores` then :func:`batch.models.popularity.top_popular`).
"""

from __future__ import annotations

import logging

from batch.evaluation.protocol import phase_parts
from batch.evaluation.scoring import paired_difference, score, served
from batch.evaluation.split import Split
from batch.evaluation.temporal import ColdUsers, cold_users
from batch.interactions import Interactions
from batch.models import fit_source
from batch.movielens import Ratings
from batch.params import Params

log = logging.getLogger(__name__)

BASE_RULES: tuple[dict, ...] = (
    {"popularity_rule": "mean", "popularity_min_count": 100},
    *({"popularity_rule": "damped", "popularity_damping": d} for d in (10.0, 100.0, 1000.0, 5000.0)),
    {"popularity_rule": "count"},
    {"popularity_rule": "liked"},
)
NEUTRAL = {"popularity_recency_days": 0.0, "popularity_window_days": 0.0,
           "popularity_damping": Params.popularity_damping,
           "popularity_min_count": Params.popularity_min_count}  # what a rule leaves unsaid
HALF_LIVES = (7.0, 14.0, 30.0, 60.0, 120.0, 240.0, 480.0)


def describe(params: Params) -> str:
    """Return a short name of ``params``' popularity rule, e.g. ``liked, half-life 60 d``."""
    rule = params.popularity_rule
    name = {"mean": f"mean rating, >= {params.popularity_min_count} ratings (original)",
            "damped": f"damped mean, strength {params.popularity_damping:g}",
            "count": "most rated", "liked": f"most ratings >= {params.like_threshold:g}"}[rule]
    if params.popularity_window_days > 0:
        name += f", last {params.popularity_window_days:g} d"
    if params.popularity_recency_days > 0:
        name += f", half-life {params.popularity_recency_days:g} d"
    return name


def _score_rules(data: Interactions, cold: ColdUsers, base: Params, rules: list[dict],
                 k: int = 10) -> list[dict]:
    out = []
    truth = cold.truth()
    for changes in rules:
        params = base.with_(**{**NEUTRAL, **changes})
        items, _ = fit_source("popularity", data, params).top(base.top_n)
        result = score(served(items, len(cold), k), truth, k)
        out.append({"rule": describe(params), "changes": changes, "users": len(cold), **result.at_10(),
                    "_scores": result})
    return out


def _clean(trials: list[dict]) -> list[dict]:
    return [{k: v for k, v in t.items() if k != "_scores"} for t in trials]


def _key(trial: dict) -> tuple[float, float]:
    return trial["precision@10"], trial["ndcg@10"]


def paired_gain(better: dict, base: dict) -> tuple[float, float]:
    """Return (mean, standard error) of the per-user P@10 difference between two scored rules."""
    diff = paired_difference(better["_scores"], base["_scores"])["precision@10"]
    return diff["difference"], diff["standard_error"]


def choose_fallback(data: Interactions, cold: ColdUsers, base: Params) -> tuple[dict, list[dict], dict]:
    """Pick the best base rule, then its best recency half-life; return (changes, trials, guard).

    Run it on the validation phase only: every choice maximises P@10 for cold users (ties:
    NDCG@10).  The half-life is adopted only when its per-user P@10 gain over the unweighted
    rule exceeds one standard error: a recency weight depends on how many ratings the last
    days hold, which differs between a validation cut and the nightly production data, so a
    gain within noise does not pay for it.
    """
    trials = _score_rules(data, cold, base, list(BASE_RULES))
    best = max(trials, key=_key)
    recency = [{**best["changes"], "popularity_recency_days": h} for h in HALF_LIVES]
    trials += _score_rules(data, cold, base, recency)
    weighted = max(trials[len(BASE_RULES):], key=_key)
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
