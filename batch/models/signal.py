"""The implicit signal a model is fitted on, from explicit ratings: one function for every model."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from batch.interactions import Interactions
from batch.params import WEIGHTINGS

DAY = 86400.0


def signal(data: Interactions, *, weighting: str, like_threshold: float,
           recency_days: float) -> sp.csr_matrix:
    """Turn ``data``'s ratings into a (n_users, n_items) float32 implicit signal.

    ``raw``: the rating; ``binary``: 1 per rating; ``liked``: 1 + [rating >= like_threshold];
    ``likes``: 1 per liked rating, others dropped; ``graded``: liked 1, a rating one below the
    threshold 0.3, lower 0.1; ``bm25``: BM25-weighted binary interactions (K1=100, B=0.8, items as
    documents).  ``recency_days`` > 0 multiplies each entry by ``0.5 ** (age / recency_days)``,
    ``age`` in days before the user's newest rating (needs ``data.times``).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose from {', '.join(WEIGHTINGS)}")
    m = data.matrix.tocsr()
    x = m.astype(np.float32, copy=True)
    r = m.data
    if weighting == "binary":
        x.data[:] = 1.0
    elif weighting == "liked":
        x.data = (1.0 + (r >= like_threshold)).astype(np.float32)
    elif weighting == "likes":
        x.data = (r >= like_threshold).astype(np.float32)
    elif weighting == "graded":
        x.data = np.where(r >= like_threshold, 1.0, np.where(r >= like_threshold - 1, 0.3, 0.1)).astype(
            np.float32)
    elif weighting == "bm25":
        from implicit.nearest_neighbours import bm25_weight

        binary = x.copy()
        binary.data[:] = 1.0
        x = bm25_weight(binary.T.tocsr(), K1=100, B=0.8).T.tocsr().astype(np.float32)
    if recency_days > 0:
        if data.times is None or len(data.times) != m.nnz:
            raise ValueError("a recency-weighted signal needs one timestamp per rating")
        x.data = x.data * user_recency(m.indptr, data.times, recency_days).astype(np.float32)
    if weighting == "likes":
        x.eliminate_zeros()
    return x


def user_recency(indptr: np.ndarray, times: np.ndarray, half_life_days: float) -> np.ndarray:
    """Return one weight per CSR entry: 1 for each user's newest rating, halving every half-life before."""
    times = np.asarray(times, dtype=np.float64)
    counts = np.diff(indptr)
    rows = np.repeat(np.arange(len(counts)), counts)
    newest = np.full(len(counts), -np.inf)
    np.maximum.at(newest, rows, times)
    return np.exp2(-(newest[rows] - times) / (half_life_days * DAY))
