"""EASE (Steck 2019): a closed-form item-item model, used as an external strong baseline."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from batch.models.topn import chunked_top_n

log = logging.getLogger(__name__)


@dataclass
class EASEModel:
    """Item-item weights ``B`` (n_items, n_items) with a zero diagonal; scores are ``X @ B``."""

    weights: np.ndarray

    def recommend(self, users: np.ndarray, seen: sp.csr_matrix, n: int,
                  chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return top-``n`` unseen item ids and scores (len(users), n) scored from ``seen``'s rows."""
        binary = seen.astype(bool).astype(np.float32).tocsr()
        return chunked_top_n(lambda batch: binary[batch] @ self.weights, users, seen, n, chunk)


def train_ease(ratings: sp.csr_matrix, l2: float = 500.0) -> EASEModel:
    """Fit EASE on the binary interactions of (n_users, n_items) ``ratings`` with L2 weight ``l2``."""
    started = time.perf_counter()
    x = ratings.astype(bool).astype(np.float64).tocsc()
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    log.info("EASE fit: %s items, l2 %s, %.2fs", gram.shape[0], l2, time.perf_counter() - started)
    return EASEModel(weights.astype(np.float32))
