"""Index raw MovieLens ids into a users x items sparse rating matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from batch.movielens import Ratings


@dataclass(frozen=True)
class Interactions:
    """Explicit ratings as CSR plus the raw ids of its rows and columns.

    ``matrix`` is (n_users, n_items) float32 with ratings 1..5 as stored values;
    ``user_ids`` and ``item_ids`` are the sorted raw ids of rows and columns; ``times``
    (nnz,) int64 holds each rating's timestamp aligned with ``matrix.data`` (None when unknown,
    e.g. rebuilt from artifacts): the recency-weighted popular list needs it.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    matrix: sp.csr_matrix
    times: np.ndarray | None = None

    @classmethod
    def from_ratings(cls, ratings: Ratings) -> Interactions:
        """Build the matrix over the users and movies that appear in ``ratings``."""
        user_ids, rows = np.unique(ratings.user_ids, return_inverse=True)
        item_ids, cols = np.unique(ratings.movie_ids, return_inverse=True)
        matrix = sp.csr_matrix(
            (ratings.ratings.astype(np.float32), (rows, cols)),
            shape=(len(user_ids), len(item_ids)),
        )
        matrix.sort_indices()
        order = np.argsort(rows.astype(np.int64) * len(item_ids) + cols)  # CSR order (pairs are unique)
        return cls(user_ids, item_ids, matrix, np.asarray(ratings.timestamps, dtype=np.int64)[order])

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return self.matrix.nnz

    def user_index(self, raw_user_ids: np.ndarray) -> np.ndarray:
        """Map raw user ids to row indices; -1 for users not in the matrix."""
        return _lookup(self.user_ids, raw_user_ids)

    def item_index(self, raw_item_ids: np.ndarray) -> np.ndarray:
        """Map raw movie ids to column indices; -1 for movies not in the matrix."""
        return _lookup(self.item_ids, raw_item_ids)

    def liked(self, threshold: float = 4.0) -> sp.csr_matrix:
        """Return a binary (n_users, n_items) CSR of ratings >= ``threshold``."""
        liked = self.matrix.copy()
        liked.data = (liked.data >= threshold).astype(np.float32)
        liked.eliminate_zeros()
        return liked


def _lookup(sorted_ids: np.ndarray, raw: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw)
    if len(sorted_ids) == 0:
        return np.full(raw.shape, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, raw), len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == raw, pos, -1)
