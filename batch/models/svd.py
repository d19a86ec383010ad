"""SVD rating model (``surprise``) and vectorised predictions from its learned arrays."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)


@dataclass
class SVDModel:
    """Biased MF: r(u, i) = mu + bu[u] + bi[i] + pu[u] . qi[i] on our row/column indices.

    ``pu`` (n_users, f), ``qi`` (n_items, f), ``bu`` (n_users,), ``bi`` (n_items,), float32:
    ranking needs no more precision and the gather-and-dot runs twice as fast.
    """

    mu: float
    bu: np.ndarray
    bi: np.ndarray
    pu: np.ndarray
    qi: np.ndarray
    rating_scale: tuple[float, float] = (1.0, 5.0)

    def score(self, users: np.ndarray, items: np.ndarray, clip: bool = False) -> np.ndarray:
        """Predict ratings for ``items`` (n_users, k) of ``users`` (n_users,); -1 ids give -inf.

        Unclipped by default: ranking on clipped values would tie every item predicted
        above 5.  ``clip=True`` reproduces ``surprise.SVD.predict(...).est``.
        """
        users = np.asarray(users)
        safe = np.where(items >= 0, items, 0)
        est = (
            self.mu
            + self.bu[users][:, None]
            + self.bi[safe]
            + np.einsum("uf,ukf->uk", self.pu[users], self.qi[safe])
        )
        if clip:
            est = np.clip(est, *self.rating_scale)
        return np.where(items >= 0, est, -np.inf)

    def baseline(self, items: np.ndarray) -> np.ndarray:
        """Predict ``items`` for a user SVD knows nothing about: mu + bi, clipped to the scale."""
        return np.clip(self.mu + self.bi[np.asarray(items)], *self.rating_scale)

    def score_all(self, users: np.ndarray) -> np.ndarray:
        """Predict every item for ``users``: (len(users), n_items), unclipped."""
        users = np.asarray(users)
        return self.mu + self.bu[users][:, None] + self.bi[None, :] + self.pu[users] @ self.qi.T


def build_trainset(ratings: sp.csr_matrix, user_ids: np.ndarray, item_ids: np.ndarray):
    """Build a ``surprise.Trainset`` for SVD whose inner ids are our row and column indices."""
    from surprise import Trainset

    ratings = ratings.tocsr()
    # Star ratings take a handful of values, so every (item, rating) tuple that can occur is
    # built once and shared: a rating then costs one list slot (8 bytes) instead of a fresh
    # tuple, int and float (~116 bytes), which is what dominated peak memory at 16M ratings.
    values = np.unique(ratings.data)
    table = [(i, float(v)) for i in range(ratings.shape[1]) for v in values]
    codes = (ratings.indices.astype(np.int64) * len(values) + np.searchsorted(values, ratings.data)).tolist()
    pick = table.__getitem__
    ur = defaultdict(list)
    for u in range(ratings.shape[0]):
        ur[u] = list(map(pick, codes[ratings.indptr[u] : ratings.indptr[u + 1]]))
    # SVD learns from ``ur`` only; ``ir`` is consulted just for ``knows_item``, so its keys
    # suffice.  Leaving its (item -> ratings) lists empty halves the trainset's memory again.
    ir = defaultdict(list, {i: [] for i in range(ratings.shape[1])})
    scale = (float(ratings.data.min()), float(ratings.data.max())) if ratings.nnz else (1.0, 5.0)
    return Trainset(
        ur,
        ir,
        ratings.shape[0],
        ratings.shape[1],
        ratings.nnz,
        scale,  # (1, 5) for ML-1M, (0.5, 5) for the half-star releases
        {int(raw): inner for inner, raw in enumerate(user_ids)},
        {int(raw): inner for inner, raw in enumerate(item_ids)},
    )


def train_svd(
    ratings: sp.csr_matrix,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    *,
    factors: int = 50,
    lr: float = 0.005,
    reg: float = 0.02,
    epochs: int = 20,
    seed: int = 42,
) -> tuple[SVDModel, object]:
    """Fit ``surprise.SVD`` on explicit ratings (n_users, n_items); return (arrays, algo)."""
    from surprise import SVD

    started = time.perf_counter()
    trainset = build_trainset(ratings, user_ids, item_ids)
    built = time.perf_counter()
    algo = SVD(n_factors=factors, lr_all=lr, reg_all=reg, n_epochs=epochs, random_state=seed)
    algo.fit(trainset)
    log.info(
        "SVD fit: %s ratings, %s factors, %s epochs, trainset %.2fs, fit %.2fs",
        ratings.nnz, factors, epochs, built - started, time.perf_counter() - built,
    )
    model = SVDModel(
        mu=float(trainset.global_mean),
        bu=np.asarray(algo.bu, dtype=np.float32),
        bi=np.asarray(algo.bi, dtype=np.float32),
        pu=np.asarray(algo.pu, dtype=np.float32),
        qi=np.asarray(algo.qi, dtype=np.float32),
        rating_scale=tuple(map(float, trainset.rating_scale)),
    )
    return model, algo
