"""ALS candidate generator over implicit confidence (``implicit`` library)."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from batch.params import WEIGHTINGS

log = logging.getLogger(__name__)


def confidence(ratings: sp.csr_matrix, weighting: str = "raw", alpha: float = 1.0) -> sp.csr_matrix:
    """Turn explicit ratings (n_users, n_items) into ALS confidence values.

    ``raw``: alpha * rating; ``binary``: alpha per rating; ``liked``: alpha * (1 + [rating >= 4]);
    ``bm25``: alpha * BM25-weighted binary interactions (K1=100, B=0.8, items as documents).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose from {', '.join(WEIGHTINGS)}")
    conf = ratings.astype(np.float32, copy=True)
    if weighting == "binary":
        conf.data[:] = 1.0
    elif weighting == "liked":
        conf.data = 1.0 + (conf.data >= 4.0).astype(np.float32)
    elif weighting == "bm25":
        from implicit.nearest_neighbours import bm25_weight

        binary = conf.copy()
        binary.data[:] = 1.0
        conf = bm25_weight(binary.T.tocsr(), K1=100, B=0.8).T.tocsr().astype(np.float32)
    conf.data *= alpha
    return conf


@dataclass
class ALSModel:
    """Trained ALS factors: ``user_factors`` (n_users, f), ``item_factors`` (n_items, f)."""

    user_factors: np.ndarray
    item_factors: np.ndarray

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Return ALS scores for ``items`` (n_users, k) of ``users`` (n_users,); -1 ids give -inf."""
        safe = np.where(items >= 0, items, 0)
        scores = np.einsum("uf,ukf->uk", self.user_factors[users], self.item_factors[safe])
        return np.where(items >= 0, scores, -np.inf).astype(np.float32)

    def recommend(
        self, users: np.ndarray, seen: sp.csr_matrix, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return top-``n`` unseen item ids and scores, each (len(users), n); -1 pads short rows.

        Uses implicit's batched top-k kernel; ``seen`` is the (n_users, n_items) matrix whose
        non-zeros are excluded.
        """
        from implicit.cpu.topk import topk

        n = min(n, self.item_factors.shape[0])
        users = np.asarray(users)
        with threadpool_limits(1, "blas"):
            ids, scores = topk(
                self.item_factors,
                self.user_factors[users],
                n,
                filter_query_items=seen[users].tocsr(),
            )
        ids, scores = ids.astype(np.int64), scores.astype(np.float32)
        invalid = (ids < 0) | ~(scores > np.finfo(np.float32).min / 2)  # implicit marks filtered as -FLT_MAX
        ids[invalid], scores[invalid] = -1, -np.inf
        return ids, scores


def train_als(
    ratings: sp.csr_matrix,
    *,
    factors: int = 32,
    regularization: float = 0.05,
    iterations: int = 20,
    alpha: float = 1.0,
    weighting: str = "raw",
    seed: int = 42,
    threads: int = 0,
    widen: Callable[[], bool] | None = None,
) -> ALSModel:
    """Fit ALS on explicit ratings (n_users, n_items) turned into confidence.

    ``threads``: implicit's solver threads (0: one per core); the model is the same for any count.
    ``widen``: polled after each iteration; once it returns True the rest of the fit uses every
    core (the SVD child that had the other one is done).
    """
    from implicit.cpu.als import AlternatingLeastSquares

    conf = confidence(ratings, weighting, alpha)
    started = time.perf_counter()
    # implicit's own threads do the work; a multi-threaded BLAS inside them only thrashes.
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="OpenBLAS is configured", category=RuntimeWarning)
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            iterations=iterations,
            random_state=seed,
            calculate_training_loss=False,
            num_threads=threads,
        )

        def after_iteration(iteration: int, *_) -> None:
            if model.num_threads != 0 and widen is not None and widen():
                log.info("ALS: the other core is free after iteration %s; using every core", iteration + 1)
                model.num_threads = 0

        model.fit(conf, show_progress=False, callback=after_iteration)
    log.info(
        "ALS fit: %s users x %s items, nnz %s, %s factors, %.2fs",
        conf.shape[0], conf.shape[1], conf.nnz, factors, time.perf_counter() - started,
    )
    return ALSModel(np.asarray(model.user_factors), np.asarray(model.item_factors))
