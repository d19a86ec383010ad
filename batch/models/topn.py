"""Dense top-n helpers shared by every scorer that builds a chunk of user x item scores."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def mask_seen(scores: np.ndarray, seen_rows: sp.csr_matrix) -> np.ndarray:
    """Set ``scores[u, i] = -inf`` wherever ``seen_rows[u, i]`` is stored; returns ``scores``."""
    rows = np.repeat(np.arange(seen_rows.shape[0]), np.diff(seen_rows.indptr))
    scores[rows, seen_rows.indices] = -np.inf
    return scores


def top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``n`` best columns of each row, best first: (ids, scores), -1 for -inf."""
    n = min(n, scores.shape[1])
    top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    top_s = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_s, axis=1, kind="stable")
    ids = np.take_along_axis(top, order, axis=1).astype(np.int64)
    top_s = np.take_along_axis(top_s, order, axis=1)
    ids[~np.isfinite(top_s)] = -1
    return ids, top_s


def chunked_top_n(score_chunk, users: np.ndarray, seen: sp.csr_matrix, n: int, chunk: int = 1024):
    """Run ``score_chunk(batch) -> (len(batch), n_items)`` over user chunks; mask seen; keep top-n.

    Peak memory is O(chunk x n_items), never O(n_users x n_items).
    """
    users = np.asarray(users)
    n = min(n, seen.shape[1])
    ids = np.full((len(users), n), -1, dtype=np.int64)
    scores = np.full((len(users), n), -np.inf, dtype=np.float32)
    for start in range(0, len(users), chunk):
        batch = users[start : start + chunk]
        s = np.asarray(score_chunk(batch), dtype=np.float32)
        mask_seen(s, seen[batch])
        ids[start : start + len(batch)], scores[start : start + len(batch)] = top_n(s, n)
    return ids, scores
