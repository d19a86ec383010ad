"""Turn ranked index arrays into stored lists, with the encoder of :mod:`lookup_api.contract.items`."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from batch.movielens import Movies
from lookup_api.contract.items import encode_list, item_head


def item_heads(item_ids: np.ndarray, movies: Movies) -> list[str]:
    """Return, per column, its item's JSON up to the scores (:func:`~lookup_api.contract.items.item_head`)."""
    lookup = movies.lookup()
    return [item_head(m, *lookup.get(m, (f"Movie {m}", []))) for m in item_ids.tolist()]


def encode_lists(user_ids: np.ndarray, items: np.ndarray, scores: np.ndarray, ratings: np.ndarray,
                 heads: list[str], chunk: int = 4096) -> Iterator[tuple[int, bytes]]:
    """Yield ``(raw user id, stored list)`` for every row of ranked (n_users, n) arrays, -1 padded."""
    for start in range(0, len(user_ids), chunk):
        rows = slice(start, start + chunk)
        for user_id, *row in zip(user_ids[rows].tolist(), items[rows].tolist(), scores[rows].tolist(),
                                 hundredths(ratings[rows]).tolist(), strict=True):
            yield user_id, encode_list(heads, *row)


def encode_one(heads: list[str], items: np.ndarray, scores: np.ndarray, ratings: np.ndarray) -> bytes:
    """Encode one ranked list (e.g. the popular list) from 1-d arrays."""
    return encode_list(heads, items.tolist(), scores.tolist(), hundredths(ratings).tolist())


def hundredths(ratings: np.ndarray) -> np.ndarray:
    """Return ``round(rating * 100)`` in float64 as the contract wants it (padding's -inf gives 0)."""
    return np.rint(np.clip(np.asarray(ratings, dtype=np.float64), 0.0, 10.0) * 100).astype(np.int64)
