"""The evaluation's rows, declared once: which model, with which settings, for which users.

A row's lists come from one model (:data:`batch.models.SOURCES`) or the whole ``pipeline``, fitted
with the default pipeline's parameters (``default``), the original project's built-in ones
(``original``) or the settings ``tune`` chose for this baseline on this protocol's validation phase
(``tuned``, searched over :data:`GRIDS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from batch.params import Params


@dataclass(frozen=True)
class Row:
    """One row of a protocol's table."""

    key: str
    name: str
    model: str  # a model name in batch.models.SOURCES, or "pipeline"
    settings: str  # "default", "original" or "tuned"
    protocol: str = "fair"  # "original": sampled users, fitted movies not excluded (random protocol only)


WARM_ROWS = (
    Row("popularity", "popularity (original rule: mean rating, >= 100 ratings)", "popularity", "original"),
    Row("recent_pop", "recency-window popularity (tuned)", "popularity", "tuned"),
    Row("content", "TF-IDF content only", "content", "default"),
    Row("als_original", "ALS only (original params)", "als", "original"),
    Row("als", "implicit ALS (tuned)", "als", "tuned"),
    Row("ease", "EASE (tuned)", "ease", "tuned"),
    Row("knn", "item-kNN (tuned)", "knn", "tuned"),
    Row("svd_full", "SVD rating, full catalogue", "svd", "default"),
    Row("original", "original pipeline (ALS+TF-IDF -> SVD)", "pipeline", "original"),
    Row("default", "default pipeline", "pipeline", "default"),
)
# The random protocol also reproduces the original project's own way of scoring.
ORIGINAL_PROTOCOL_ROWS = (
    Row("original@original", "original pipeline, original protocol", "pipeline", "original", "original"),
    Row("default@original", "default pipeline, original protocol", "pipeline", "default", "original"),
)
# Temporal protocol: what cold users are served (a popular list as is), and warm + cold together.
COLD_ROWS = (
    Row("fallback@cold", "published fallback", "popularity", "default"),
    Row("popularity@cold", "original fallback", "popularity", "original"),
)
ALL_ROWS = (  # (warm row, cold row, name)
    ("default", "fallback@cold", "default pipeline + published fallback (the product)"),
    ("original", "popularity@cold", "original pipeline + original fallback (the seed)"),
    ("als", "fallback@cold", "implicit ALS (tuned) + published fallback"),
    ("ease", "fallback@cold", "EASE (tuned) + published fallback"),
    ("knn", "fallback@cold", "item-kNN (tuned) + published fallback"),
    ("recent_pop", "fallback@cold", "recency-window popularity (tuned) + published fallback"),
    ("popularity", "popularity@cold", "original fallback list for everyone"),
)
TUNED_ROWS = tuple(r for r in WARM_ROWS if r.settings == "tuned")


ALPHAS = (0.5, 1, 2, 4, 8, 16, 32)


def _als_grid(size_per_signal: int = 12, seed: int = 0) -> tuple[dict, ...]:
    """ALS: a seeded random sample per signal (likes only, raw rating, like-aware) plus known points."""
    rng = np.random.default_rng(seed)
    grid = []
    for weighting in ("likes", "raw", "liked", "graded"):
        for _ in range(size_per_signal):
            grid.append({"als_weighting": weighting,
                         "als_factors": int(rng.choice((32, 64, 128))),
                         "als_regularization": float(rng.choice((10, 25, 50, 100, 200, 400, 800))),
                         "als_alpha": float(rng.choice(ALPHAS)) / (5 if weighting == "raw" else 1),
                         "als_iterations": int(rng.choice((15, 30)))})
    grid += [{"als_weighting": "likes", "als_factors": 64, "als_regularization": 320.0, "als_alpha": 12.8,
              "als_iterations": 15},
             {"als_weighting": "likes", "als_factors": 64, "als_regularization": 50.0, "als_alpha": 1.0,
              "als_iterations": 30}]
    return tuple(grid)


L2 = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 32000.0)
GRIDS: dict[str, tuple[dict, ...]] = {
    # the signal (all ratings binarized, likes only, graded, rating-weighted) x lambda; a raw rating
    # is ~4x a binary one, so its lambda is scaled by 4^2
    "ease": (*({"ease_weighting": w, "ease_l2": l2} for w, l2 in product(("binary", "likes", "graded"), L2)),
             *({"ease_weighting": "raw", "ease_l2": 16 * l2} for l2 in L2)),
    "als": _als_grid(),
    "knn": tuple({"knn_kind": kind, "knn_weighting": w, "knn_neighbours": k} for kind, w, k in
                 product(("cosine", "bm25"), ("likes", "binary"), (20, 50, 100, 200, 500, 1000))),
    "recent_pop": (*({"popularity_rule": r, "popularity_window_days": d}
                     for r, d in product(("liked", "count"), (1.0, 3.0, 7.0, 14.0, 30.0, 60.0, 120.0, 0.0))),
                   *({"popularity_rule": r, "popularity_recency_days": h}
                     for r, h in product(("liked", "count"), (1.0, 3.0, 7.0, 14.0, 30.0, 60.0, 120.0)))),
}
SMALL_GRIDS = {key: grid[:2] for key, grid in GRIDS.items()}


def original(params: Params) -> Params:
    """The original project's pipeline: the built-in defaults (SVD ranker), with ``params``' seed."""
    return Params(seed=params.seed)


def settings_for(row: Row, params: Params, baselines: dict) -> Params:
    """Return the parameters ``row`` is fitted with (``baselines``: this protocol's tuned section)."""
    if row.settings == "default":
        return params
    if row.settings == "original":
        return original(params)
    chosen = baselines.get(row.key, {}).get("settings", {})
    return original(params).with_(**chosen)


def describe(settings: dict) -> str:
    """``{"ease_l2": 16000.0, "ease_weighting": "likes"}`` -> ``l2 16000, weighting likes``."""
    parts = []
    for name, value in settings.items():
        short = name.split("_", 1)[1] if "_" in name else name
        parts.append(f"{short} {value:g}" if isinstance(value, float) else f"{short} {value}")
    return ", ".join(parts)
