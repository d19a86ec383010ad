"""Item-kNN (implicit's CosineRecommender / BM25Recommender): the K most similar items of each item."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from batch.interactions import Interactions
from batch.models.base import Recommender
from batch.models.signal import signal
from batch.models.topn import chunked_top_n

log = logging.getLogger(__name__)


@dataclass
class KNNModel(Recommender):
    """``similarity`` (n_items, n_items) sparse, K entries per row; ``inputs`` (n_users, n_items) the
    fitted signal; a user's scores are ``inputs[u] @ similarity``."""

    similarity: sp.csr_matrix
    inputs: sp.csr_matrix

    @property
    def n_users(self) -> int:
        return self.inputs.shape[0]

    @property
    def n_items(self) -> int:
        return self.similarity.shape[0]

    def _recommend(self, users: np.ndarray, exclude: sp.csr_matrix, n: int):
        def score(batch: np.ndarray) -> np.ndarray:
            return (self.inputs[batch] @ self.similarity).toarray()

        ids, scores = chunked_top_n(score, users, exclude, n)
        ids[~(scores > 0)] = -1  # no similar item at all: not a recommendation
        return ids, scores


def fit(data: Interactions, *, kind: str, neighbours: int, weighting: str,
        like_threshold: float) -> KNNModel:
    """Fit item-item similarities (``cosine`` or ``bm25``) on ``data``'s signal."""
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

    started = time.perf_counter()
    x = signal(data, weighting=weighting, like_threshold=like_threshold, recency_days=0.0)
    model = (BM25Recommender if kind == "bm25" else CosineRecommender)(K=neighbours, num_threads=1)
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Method expects CSR input")  # its own internal COO
        model.fit(x, show_progress=False)
    similarity = model.similarity.tocsr().astype(np.float32)
    log.info("item-kNN fit: %s, K=%s, %s items, %.2fs", kind, neighbours, x.shape[1],
             time.perf_counter() - started)
    return KNNModel(similarity, x)
