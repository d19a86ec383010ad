"""Dense top-n helpers shared by every scorer that builds a chunk of user x item scores."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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


def for_each_chunk(work: Callable[[slice], None], total: int, chunk: int) -> None:
    """Call ``work(slice)`` for consecutive slices of ``range(total)``, on every core.

    The heavy parts of a chunk (BLAS, argpartition, gathers) run in numpy without the GIL, so
    threads use every core; each chunk writes its own rows, so the result equals a sequential
    loop's.  BLAS gets one thread per chunk: the chunks are the parallelism.
    """
    from threadpoolctl import threadpool_limits

    slices = [slice(start, min(start + chunk, total)) for start in range(0, total, chunk)]
    workers = min(os.cpu_count() or 1, len(slices))
    with threadpool_limits(1, "blas"):
        if workers <= 1:
            for sl in slices:
                work(sl)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="recsys-chunk") as pool:
            list(pool.map(work, slices))  # re-raises a chunk's exception here


def chunk_rows(n_columns: int, cells: int = 1 << 22, most: int = 1024) -> int:
    """Return how many rows of ``n_columns`` make a chunk of about ``cells`` cells (64..most)."""
    return max(64, min(most, cells // max(n_columns, 1)))


def chunked_top_n(score_chunk, users: np.ndarray, seen: sp.csr_matrix, n: int, chunk: int | None = None):
    """Run ``score_chunk(batch) -> (len(batch), n_items)`` over user chunks; mask seen; keep top-n.

    Peak memory is O(cores x chunk x n_items), never O(n_users x n_items); ``chunk`` defaults to
    :func:`chunk_rows` of the catalogue size.
    """
    users = np.asarray(users)
    n = min(n, seen.shape[1])
    ids = np.full((len(users), n), -1, dtype=np.int64)
    scores = np.full((len(users), n), -np.inf, dtype=np.float32)

    def work(sl: slice) -> None:
        batch = users[sl]
        s = np.asarray(score_chunk(batch), dtype=np.float32)
        mask_seen(s, seen[batch])
        ids[sl], scores[sl] = top_n(s, n)

    for_each_chunk(work, len(users), chunk or chunk_rows(seen.shape[1]))
    return ids, scores
