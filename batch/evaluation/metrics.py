"""Top-N ranking metrics over all users at once (vectorised; no per-user loop).

Every function takes ``recs`` (n_users, K) item indices, best first, -1 padded, and the
matching relevance; curves are returned for every cut-off k = 1..K.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

METRICS = ("precision", "recall", "ndcg", "map", "hit_rate", "coverage")


def hits(recs: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """Return a boolean (n_users, K): is ``recs[u, j]`` a stored entry of row ``u`` of ``relevant``?"""
    relevant = relevant.tocsr()
    relevant.sort_indices()
    n_items = relevant.shape[1]
    rows = np.repeat(np.arange(relevant.shape[0], dtype=np.int64), np.diff(relevant.indptr))
    keys = rows * n_items + relevant.indices  # sorted: CSR rows in order, indices sorted
    query = np.arange(len(recs), dtype=np.int64)[:, None] * n_items + recs
    pos = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
    found = keys[pos] == query if len(keys) else np.zeros(recs.shape, dtype=bool)
    return found & (recs >= 0)


def user_metrics(recs: np.ndarray, relevant: sp.csr_matrix, n_relevant: np.ndarray) -> dict[str, np.ndarray]:
    """Return ``{metric: (n_users, K) value of each user at k = 1..K}`` for every metric but coverage.

    ``relevant`` (n_users, n_items) marks each user's relevant held-out items; ``n_relevant``
    (n_users,) is how many there are (it may exceed the row's entries: unreachable items still
    count in recall, NDCG's ideal and MAP's normaliser).  Users with ``n_relevant == 0`` must be
    removed beforehand.
    """
    recs = np.asarray(recs, dtype=np.int64)
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    if (n_relevant <= 0).any():
        raise ValueError("every evaluated user needs at least one relevant item")
    k = np.arange(1, recs.shape[1] + 1)
    hit = hits(recs, relevant).astype(np.float64)
    cum = np.cumsum(hit, axis=1)
    discount = 1.0 / np.log2(k + 1)
    dcg = np.cumsum(hit * discount, axis=1)
    ideal_cum = np.cumsum(discount)
    ideal = ideal_cum[np.minimum(k[None, :], n_relevant[:, None]).astype(np.int64) - 1]
    denom = np.minimum(k[None, :], n_relevant[:, None])
    return {
        "precision": cum / k[None, :],
        "recall": cum / n_relevant[:, None],
        "ndcg": dcg / ideal,
        "map": np.cumsum(hit * cum / k[None, :], axis=1) / denom,
        "hit_rate": (cum > 0).astype(np.float64),
    }


def ranking_curves(recs: np.ndarray, relevant: sp.csr_matrix, n_relevant: np.ndarray,
                   n_items: int | None = None) -> dict[str, np.ndarray]:
    """Return ``{metric: (K,) mean over users at k = 1..K}`` for every metric in ``METRICS``.

    See :func:`user_metrics`; coverage is the share of the ``n_items`` catalogue recommended to anyone.
    """
    n_items = relevant.shape[1] if n_items is None else n_items
    per_user = user_metrics(recs, relevant, n_relevant)
    return {**{name: values.mean(axis=0) for name, values in per_user.items()},
            "coverage": coverage_curve(np.asarray(recs, dtype=np.int64), n_items)}


def at_10(curves: dict[str, np.ndarray]) -> dict[str, float]:
    """Return P@10 and NDCG@10 of ``curves`` (k = 1..10 or more), rounded to 5 decimals."""
    return {"precision@10": round(float(curves["precision"][9]), 5),
            "ndcg@10": round(float(curves["ndcg"][9]), 5)}


def by_p10(metrics: dict[str, float]) -> tuple[float, float]:
    """Return the order in which tuning compares :func:`at_10` results: P@10, ties by NDCG@10."""
    return metrics["precision@10"], metrics["ndcg@10"]


def coverage_curve(recs: np.ndarray, n_items: int) -> np.ndarray:
    """Return (K,) the share of the catalogue that appears in anyone's top-k, k = 1..K."""
    depth = recs.shape[1]
    ranks = np.broadcast_to(np.arange(depth), recs.shape)
    valid = recs >= 0
    first = np.full(n_items, depth, dtype=np.int64)
    np.minimum.at(first, recs[valid], ranks[valid])
    counts = np.bincount(first, minlength=depth + 1)[:depth]
    return np.cumsum(counts) / max(n_items, 1)


def rating_errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Return ``{"rmse": ..., "mae": ...}`` of rating predictions."""
    err = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}
