"""Popularity lists: the original mean-rating rule and a damped (Bayesian) mean."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def item_stats(ratings: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Return (rating count, mean rating) per item for (n_users, n_items) ratings."""
    csc = ratings.tocsc()
    counts = np.diff(csc.indptr).astype(np.int64)
    sums = np.asarray(csc.sum(axis=0)).ravel()
    means = np.divide(sums, counts, out=np.zeros_like(sums, dtype=np.float64), where=counts > 0)
    return counts, means


def popularity_scores(ratings: sp.csr_matrix, rule: str = "damped", min_count: int = 100,
                      damping: float = 100.0) -> np.ndarray:
    """Score every item (n_items,) for the popular list; higher is better.

    ``mean``: the original rule, mean rating among items with >= ``min_count`` ratings
    (others -inf).  ``damped``: (sum + damping * global_mean) / (count + damping), a
    Bayesian mean that needs no hard cut-off.  ``count``: number of ratings.
    """
    counts, means = item_stats(ratings)
    if rule == "mean":
        return np.where(counts >= min_count, means, -np.inf)
    if rule == "count":
        return counts.astype(np.float64)
    if rule == "damped":
        mu = ratings.data.mean() if ratings.nnz else 0.0
        return (means * counts + damping * mu) / (counts + damping)
    raise ValueError(f"unknown popularity rule {rule!r}; choose mean, damped or count")


def top_popular(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``n`` best item indices and their scores, best first (ties: lower index)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[np.isfinite(scores[order])][:n]
    return order.astype(np.int64), scores[order]
