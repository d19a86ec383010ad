"""Popularity lists for users without a personal list (the cold start), optionally recency-weighted.

Every rule scores each item (n_items,) from the (n_users, n_items) rating matrix; higher is
better.  With a half-life, a rating ``age`` days older than the newest rating in the data
counts ``0.5 ** (age / half_life)`` instead of 1 (needs the ratings' timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from batch.interactions import Interactions
from batch.models.base import Recommender
from batch.models.topn import chunked_top_n
from batch.params import POPULARITY_RULES

DAY = 86400.0


def item_stats(ratings: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Return (rating count, mean rating) per item for (n_users, n_items) ratings."""
    csc = ratings.tocsc()
    counts = np.diff(csc.indptr).astype(np.int64)
    sums = np.asarray(csc.sum(axis=0)).ravel()
    means = np.divide(sums, counts, out=np.zeros_like(sums, dtype=np.float64), where=counts > 0)
    return counts, means


def recency_weights(times: np.ndarray, half_life_days: float) -> np.ndarray:
    """Return one weight per rating: 1 for the newest, halving every ``half_life_days`` before it."""
    times = np.asarray(times, dtype=np.float64)
    if half_life_days <= 0 or len(times) == 0:
        return np.ones(len(times))
    return np.exp2(-(times.max() - times) / (half_life_days * DAY))


def popularity_scores(ratings: sp.csr_matrix, *, rule: str, min_count: int, damping: float,
                      recency_days: float, window_days: float, like_threshold: float,
                      times: np.ndarray | None) -> np.ndarray:
    """Score every item (n_items,) for the popular list; higher is better.

    ``mean``: the original rule, mean rating among items with >= ``min_count`` ratings
    (others -inf).  ``damped``: (sum + damping * global_mean) / (count + damping), a
    Bayesian mean that needs no hard cut-off.  ``count``: number of ratings.  ``liked``:
    number of ratings >= ``like_threshold``.  ``recency_days`` > 0 weighs every rating by
    its recency; ``window_days`` > 0 counts only the ratings of the last ``window_days`` days
    before the newest one (``times``, aligned with ``ratings.data``, is then required);
    ``min_count`` always counts unweighted ratings.
    """
    if rule not in POPULARITY_RULES:
        raise ValueError(f"unknown popularity rule {rule!r}; choose from {', '.join(POPULARITY_RULES)}")
    n_items = ratings.shape[1]
    weights = np.ones(ratings.nnz)
    if recency_days > 0 or window_days > 0:
        if times is None or len(times) != ratings.nnz:
            raise ValueError("a recency-weighted popular list needs one timestamp per rating")
        weights = recency_weights(times, recency_days)
        if window_days > 0 and len(times):
            weights = weights * (np.asarray(times) >= np.max(times) - window_days * DAY)
    cols = ratings.indices
    if rule == "liked":
        return np.bincount(cols, weights=weights * (ratings.data >= like_threshold), minlength=n_items)
    counts = np.bincount(cols, weights=weights, minlength=n_items)
    if rule == "count":
        return counts
    sums = np.bincount(cols, weights=weights * ratings.data, minlength=n_items)
    if rule == "damped":
        mu = sums.sum() / counts.sum() if ratings.nnz else 0.0
        return (sums + damping * mu) / (counts + damping)
    means = np.divide(sums, counts, out=np.zeros(n_items), where=counts > 0)
    return np.where(np.bincount(cols, minlength=n_items) >= min_count, means, -np.inf)


@dataclass
class PopularityModel(Recommender):
    """One score per item (``scores``, (n_items,)): the same order for everyone, minus what they rated.

    Users the model was not fitted on get the list as is (the cold-start fallback).
    """

    scores: np.ndarray
    fitted_users: int

    @property
    def n_users(self) -> int:
        return self.fitted_users

    @property
    def n_items(self) -> int:
        return len(self.scores)

    def top(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The popular list itself: the ``n`` best items and their scores (no exclusion)."""
        return top_popular(self.scores, n)

    def unknown(self, count: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        items, scores = self.top(n)
        ids = np.full((count, n), -1, dtype=np.int64)
        out = np.full((count, n), -np.inf, dtype=np.float32)
        ids[:, : len(items)], out[:, : len(items)] = items, scores
        return ids, out

    def _recommend(self, users: np.ndarray, exclude: sp.csr_matrix, n: int):
        row = np.where(np.isfinite(self.scores), self.scores, -np.inf).astype(np.float32)[None, :]
        return chunked_top_n(lambda batch: np.repeat(row, len(batch), axis=0), users, exclude, n)


def fit(data: Interactions, *, rule: str, min_count: int, damping: float, recency_days: float,
        window_days: float, like_threshold: float) -> PopularityModel:
    """Fit the popular list of ``data`` under ``rule`` (see :func:`popularity_scores`)."""
    scores = popularity_scores(data.matrix, rule=rule, min_count=min_count, damping=damping,
                               recency_days=recency_days, window_days=window_days,
                               like_threshold=like_threshold, times=data.times)
    return PopularityModel(np.asarray(scores, dtype=np.float64), data.n_users)


def top_popular(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``n`` best item indices and their scores, best first (ties: lower index)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[np.isfinite(scores[order])][:n]
    return order.astype(np.int64), scores[order]
