"""``tune``: a coarse-to-fine search on the validation part (fit on train); test is never read.

Stages: SVD by validation RMSE; ALS alone by P@10 (coarse over weighting x regularisation x
alpha, then factors and a finer grid around the best); the ranking blend and the candidate
counts on the full pipeline for the best ALS configurations; EASE's L2 for the baseline row.
Every choice maximises validation P@10 (ties: NDCG@10).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import product
from pathlib import Path

import numpy as np

from batch import pipeline
from batch.evaluation import baselines
from batch.evaluation.metrics import by_p10, ranking_curves
from batch.evaluation.protocol import ModelCache, fold_for, svd_errors
from batch.evaluation.split import split_ratings
from batch.models.ease import train_ease
from batch.movielens import Movies, Ratings
from batch.params import Params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSpace:
    """What ``tune`` tries (defaults sized for ML-1M on 2 cores: about 5 minutes)."""

    svd: tuple = tuple((f, e, lr, r) for (f, e) in ((50, 20), (50, 30), (100, 20), (100, 30))
                       for lr in (0.005, 0.01) for r in (0.02, 0.05, 0.08))
    weightings: tuple = ("raw", "liked", "binary", "bm25")
    # per weighting, multiplies `alphas` (binary and bm25 confidences are on another scale)
    alpha_scale: dict = field(default_factory=lambda: {"binary": 4.0, "bm25": 2.0})
    alphas: tuple = (0.5, 1.0, 2.0)
    regularizations: tuple = (5.0, 20.0, 50.0, 100.0)
    coarse_factors: int = 64
    factors: tuple = (32, 64, 128)
    fine_steps: tuple = (0.7, 1.0, 1.4)
    top_als: int = 3
    blends: tuple = (
        *({"blend_form": "product", "blend_als": 1.0, "blend_svd": s, "blend_scale": c, "blend_pop": p}
          for s in (0.5, 1.0, 1.5, 2.0) for c in (0.5, 1.0, 2.0) for p in (-0.1, 0.0, 0.1)),
        *({"blend_form": "linear", "blend_als": 1.0, "blend_svd": s, "blend_pop": p}
          for s in (0.05, 0.1, 0.2) for p in (0.0, 0.02)),
    )
    candidates: tuple = ((50, 30), (100, 0), (100, 30), (200, 30))
    ease_l2: tuple = (100.0, 300.0, 1000.0, 2000.0, 4000.0)

    def scale(self, weighting: str) -> float:
        """Return the alpha multiplier of ``weighting``."""
        return self.alpha_scale.get(weighting, 1.0)


SMALL = SearchSpace(svd=((10, 10, 0.01, 0.05), (20, 10, 0.01, 0.02)), weightings=("raw", "binary"),
                    alphas=(1.0,), regularizations=(0.1, 1.0), coarse_factors=8, factors=(8,),
                    fine_steps=(1.0,), top_als=1, blends=SearchSpace.blends[:3] + SearchSpace.blends[-1:],
                    candidates=((20, 5),), ease_l2=(10.0, 100.0))


def tune(ratings: Ratings, movies: Movies, base: Params | None = None, space: SearchSpace = SearchSpace(),
         seed: int = 42) -> dict:
    """Search ``space`` on validation and return the tuned-file document (``params`` + provenance)."""
    started = time.perf_counter()
    base = (base or Params()).with_(seed=seed)
    fold = fold_for(ratings, split_ratings(ratings, seed=seed), "validation")
    users, data = fold.users(), fold.data
    relevant, n_relevant = fold.relevant()[users], fold.n_relevant[users]
    cache = ModelCache(fold, movies)
    trials: list[dict] = []

    def score(stage: str, recs: np.ndarray, **changes) -> tuple[float, float]:
        curves = ranking_curves(recs[:, :10], relevant, n_relevant, data.n_items)
        metrics = {"precision@10": round(float(curves["precision"][-1]), 5),
                   "ndcg@10": round(float(curves["ndcg"][-1]), 5)}
        trials.append({"stage": stage, **changes, **metrics})
        log.info("%s %s: P@10 %.4f NDCG@10 %.4f", stage, changes, *by_p10(metrics))
        return by_p10(metrics)

    # 1. SVD: the rating model, by validation RMSE.
    best_rmse = None
    for f, e, lr, r in space.svd:
        p = base.with_(svd_factors=f, svd_epochs=e, svd_lr=lr, svd_reg=r)
        errors = svd_errors(fold, cache.svd(p))
        trials.append({"stage": "svd", "svd_factors": f, "svd_epochs": e, "svd_lr": lr, "svd_reg": r,
                       **{k: round(v, 5) for k, v in errors.items()}})
        if best_rmse is None or errors["rmse"] < best_rmse[0]:
            best_rmse = (errors["rmse"], p)
    base = best_rmse[1]
    log.info("SVD: best validation RMSE %.4f", best_rmse[0])

    # 2. ALS alone: coarse, then factors, then a finer regularisation x alpha grid.
    def als_trial(stage: str, p: Params) -> tuple:
        recs = baselines.als_only(cache.models(p), data, users, 10)
        return score(stage, recs, als_weighting=p.als_weighting, als_factors=p.als_factors,
                     als_regularization=p.als_regularization, als_alpha=p.als_alpha), p

    found = [als_trial("als-coarse", base.with_(als_weighting=w, als_factors=space.coarse_factors,
                                                als_regularization=r, als_alpha=a * space.scale(w)))
             for w in space.weightings for r in space.regularizations for a in space.alphas]
    best = max(found, key=lambda t: t[0])[1]
    found += [als_trial("als-factors", best.with_(als_factors=f)) for f in space.factors
              if f != best.als_factors]
    best = max(found, key=lambda t: t[0])[1]
    found += [als_trial("als-fine", best.with_(als_regularization=best.als_regularization * sr,
                                               als_alpha=best.als_alpha * sa))
              for sr, sa in product(space.fine_steps, space.fine_steps) if (sr, sa) != (1.0, 1.0)]
    found.sort(key=lambda t: t[0], reverse=True)
    als_best = found[0]

    # 3. The ranking blend on the full pipeline, for the best ALS configurations.
    ranked = []
    for _, p in found[: space.top_als]:
        models = cache.models(p)
        cands = pipeline.candidates(models, data, users, p)
        for blend in space.blends:
            q = p.with_(ranker="blend", **blend)
            recs = pipeline.rank(models, users, cands, q.with_(top_n=10)).items
            ranked.append((score("blend", recs, als_factors=q.als_factors, als_weighting=q.als_weighting,
                                 als_regularization=q.als_regularization, als_alpha=q.als_alpha, **blend), q))
    best = max(ranked, key=lambda t: t[0])[1]
    for n_als, n_content in space.candidates:
        q = best.with_(candidates=n_als, content_candidates=n_content)
        recs = baselines.two_stage(cache.models(q), data, users, 10, q)
        ranked.append((score("candidates", recs, candidates=n_als, content_candidates=n_content), q))
    chosen_key, chosen = max(ranked, key=lambda t: t[0])

    # 4. EASE's L2 for the external baseline row (not part of the pipeline).
    eases = []
    for l2 in space.ease_l2:
        recs = train_ease(data.matrix, l2).recommend(users, data.matrix, 10)[0]
        eases.append((score("ease", recs, ease_l2=l2), l2))
    ease_key, ease_l2 = max(eases)

    original = Params(seed=seed)
    original_key = score("original", baselines.two_stage(cache.models(original), data, users, 10, original))
    seconds = time.perf_counter() - started
    log.info("tune: chosen P@10 %.4f NDCG@10 %.4f in %.0fs (%s trials)", *chosen_key, seconds, len(trials))
    summary = {name: {"precision@10": k[0], "ndcg@10": k[1]} for name, k in (
        ("default", chosen_key), ("als_only", als_best[0]), ("ease", ease_key), ("original", original_key))}
    summary["svd_rmse"] = round(best_rmse[0], 5)
    return {
        "version": 1,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "objective": "validation precision@10 (ties: NDCG@10); SVD by validation RMSE",
        "protocol": {"split": "60/20/20 stratified by user", "seed": seed, "fit_on": "train",
                     "scored_on": "validation", "users": len(users), "relevance": "rating >= 4"},
        "params": chosen.to_dict(),
        "baselines": {"ease_l2": ease_l2},
        "validation": summary,
        "search_space": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(space).items()},
        "seconds": round(seconds, 1),
        "trials": trials,
    }


def dumps(doc: dict) -> str:
    """Serialise a tuned-file document: indented, but one line per trial and per search-space entry."""
    parts = []
    for key, value in doc.items():
        if isinstance(value, list) and value:
            body = ",\n".join(f"  {json.dumps(v)}" for v in value)
            parts.append(f' {json.dumps(key)}: [\n{body}\n ]')
        elif isinstance(value, dict) and "trials" in value:
            parts.append(f" {json.dumps(key)}: " + dumps(value).rstrip().replace("\n", "\n "))
        elif key == "search_space":
            body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            parts.append(f' {json.dumps(key)}: {{\n{body}\n }}')
        else:
            parts.append(f" {json.dumps(key)}: " + json.dumps(value, indent=1).replace("\n", "\n "))
    return "{\n" + ",\n".join(parts) + "\n}\n"


def write_tuned(doc: dict, path: Path | str) -> Path:
    """Write the tuned-file document (atomically: a temporary file, then a rename)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(dumps(doc))
    tmp.replace(path)
    return path
