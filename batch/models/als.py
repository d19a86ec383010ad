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

from batch.interactions import Interactions
from batch.models.base import Recommender
from batch.models.signal import signal

log = logging.getLogger(__name__)


def confidence(data: Interactions, *, weighting: str, alpha: float, like_threshold: float,
               recency_days: float) -> sp.csr_matrix:
    """ALS confidence: ``alpha`` x the implicit signal (:func:`batch.models.signal.signal`)."""
    conf = signal(data, weighting=weighting, like_threshold=like_threshold, recency_days=recency_days)
    conf.data *= alpha
    return conf


@dataclass
class ALSModel(Recommender):
    """Trained ALS factors: ``user_factors`` (n_users, f), ``item_factors`` (n_items, f)."""

    user_factors: np.ndarray
    item_factors: np.ndarray

    @property
    def n_users(self) -> int:
        return self.user_factors.shape[0]

    @property
    def n_items(self) -> int:
        return self.item_factors.shape[0]

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Return ALS scores for ``items`` (n_users, k) of ``users`` (n_users,); -1 ids give -inf."""
        safe = np.where(items >= 0, items, 0)
        scores = np.einsum("uf,ukf->uk", self.user_factors[users], self.item_factors[safe])
        return np.where(items >= 0, scores, -np.inf).astype(np.float32)

    def _recommend(self, users: np.ndarray, exclude: sp.csr_matrix, n: int):
        """implicit's batched top-k kernel; ``exclude``'s non-zeros are filtered."""
        from implicit.cpu.topk import topk

        with threadpool_limits(1, "blas"):
            ids, scores = topk(self.item_factors, self.user_factors[users], n,
                               filter_query_items=exclude[users].tocsr())
        ids, scores = ids.astype(np.int64), scores.astype(np.float32)
        invalid = (ids < 0) | ~(scores > np.finfo(np.float32).min / 2)  # implicit marks filtered as -FLT_MAX
        ids[invalid], scores[invalid] = -1, -np.inf
        return ids, scores


def fit(data: Interactions, *, factors: int, regularization: float, iterations: int, alpha: float,
        weighting: str, recency_days: float, like_threshold: float, seed: int, threads: int = 0,
        widen: Callable[[], bool] | None = None) -> ALSModel:
    """Fit ALS on ``data``'s ratings turned into confidence (:func:`confidence`).

    ``threads`` (runtime, not a setting): implicit's solver threads (0: one per core); the model is
    the same for any count.  ``widen``: polled after each iteration; once it returns True the rest of
    the fit uses every core (the SVD child that had the other one is done).
    """
    from implicit.cpu.als import AlternatingLeastSquares

    conf = confidence(data, weighting=weighting, alpha=alpha, like_threshold=like_threshold,
                      recency_days=recency_days)
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
