"""EASE (Steck 2019): a closed-form item-item model, optionally over a bounded item set.

The model is a dense item x item inverse: fine at ML-1M's 3,706 movies, not at ML-25M's 55k.
``items`` > 0 keeps only the most liked movies (columns of the model and of its scores); the
others get no EASE score (the pipeline takes them from ALS).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from batch.interactions import Interactions
from batch.models.base import Recommender
from batch.models.signal import signal
from batch.models.topn import chunked_top_n

log = logging.getLogger(__name__)
DENSE_FLOAT64 = 4096


@dataclass
class EASEModel(Recommender):
    """``weights`` B (k, k), zero diagonal, over catalogue columns ``columns`` (k,); ``inputs`` is the
    (n_users, n_items) signal it was fitted on; a user's scores are ``inputs[u, columns] @ B``."""

    weights: np.ndarray
    columns: np.ndarray
    inputs: sp.csr_matrix

    @property
    def n_users(self) -> int:
        return self.inputs.shape[0]

    @property
    def n_items(self) -> int:
        return self.inputs.shape[1]

    @cached_property
    def _local(self) -> sp.csr_matrix:
        """The inputs over the model's columns only (the inputs themselves when unbounded)."""
        if len(self.columns) == self.n_items:
            return self.inputs
        return self.inputs[:, self.columns].tocsr()

    @cached_property
    def _position(self) -> np.ndarray:
        """(n_items,) each catalogue item's column in the model, -1 outside the set."""
        position = np.full(self.n_items, -1, dtype=np.int64)
        position[self.columns] = np.arange(len(self.columns))
        return position

    def _recommend(self, users: np.ndarray, exclude: sp.csr_matrix, n: int):
        local = self._local
        bounded = len(self.columns) < self.n_items
        seen = exclude[:, self.columns].tocsr() if bounded else exclude
        ids, scores = chunked_top_n(lambda batch: (local[batch] @ self.weights), users, seen,
                                    min(n, len(self.columns)))
        ids = np.where(ids >= 0, self.columns[np.maximum(ids, 0)], -1)
        if ids.shape[1] < n:
            ids = np.pad(ids, ((0, 0), (0, n - ids.shape[1])), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, n - scores.shape[1])), constant_values=-np.inf)
        return ids, scores

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Return EASE scores for ``items`` (n_users, k) of ``users``; items outside the set and -1: -inf."""
        local = self._position[np.maximum(items, 0)]
        full = np.asarray(self._local[np.asarray(users)] @ self.weights, dtype=np.float32)  # (u, k)
        ok = (items >= 0) & (local >= 0)
        out = np.take_along_axis(full, np.maximum(local, 0), axis=1)
        return np.where(ok, out, -np.inf)


def fit(data: Interactions, *, l2: float, weighting: str, items: int, recency_days: float,
        like_threshold: float) -> EASEModel:
    """Fit EASE on ``data``'s signal (:func:`batch.models.signal.signal`) with L2 weight ``l2``.

    ``items`` > 0: only the ``items`` movies with the most likes (ties: more ratings, lower index).
    """
    started = time.perf_counter()
    x = signal(data, weighting=weighting, like_threshold=like_threshold, recency_days=recency_days)
    n_items = x.shape[1]
    if 0 < items < n_items:
        m = data.matrix
        likes = np.bincount(m.indices, weights=(m.data >= like_threshold), minlength=n_items)
        counts = np.bincount(m.indices, minlength=n_items)
        columns = np.sort(np.lexsort((np.arange(n_items), -counts, -likes))[:items])
    else:
        columns = np.arange(n_items)
    local = x[:, columns].tocsc() if len(columns) < n_items else x.tocsc()
    # float64 for a small item set; above DENSE_FLOAT64 items float32 halves the two dense k x k arrays
    # (the L2 term keeps the Gram matrix well conditioned)
    dtype = np.float64 if len(columns) <= DENSE_FLOAT64 else np.float32
    gram = (local.T @ local).toarray().astype(dtype)
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    del gram
    inverse /= -np.diag(inverse)[None, :]
    inverse[np.diag_indices_from(inverse)] = 0.0
    log.info("EASE fit: %s of %s items, l2 %s, %s, %.2fs", len(columns), n_items, l2, weighting,
             time.perf_counter() - started)
    return EASEModel(inverse.astype(np.float32), columns.astype(np.int64), x)
