"""Turn ranked index arrays into the JSON item lists of the Redis contract."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from batch.movielens import Movies


def item_fragments(item_ids: np.ndarray, movies: Movies) -> list[str]:
    """Return, per column, the JSON of its item up to the score: ``{"movie_id":1,...,"score":``."""
    lookup = movies.lookup()
    out = []
    for movie_id in item_ids:
        title, genres = lookup.get(int(movie_id), (f"Movie {int(movie_id)}", []))
        head = json.dumps(
            {"movie_id": int(movie_id), "title": title, "genres": genres},
            separators=(",", ":"),
            ensure_ascii=False,
        )
        out.append(head[:-1] + ',"score":')
    return out


def encode_list(fragments: list[str], items: np.ndarray, scores: np.ndarray) -> bytes:
    """Encode one ranked list (column indices, -1 padded) as compact JSON bytes."""
    parts = [
        f"{fragments[i]}{s:.4f}}}" for i, s in zip(items.tolist(), scores.tolist(), strict=True) if i >= 0
    ]
    return ("[" + ",".join(parts) + "]").encode("utf-8")


def encode_lists(
    user_ids: np.ndarray, items: np.ndarray, scores: np.ndarray, fragments: list[str]
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(raw user id, JSON bytes)`` for every row of a ranked (n_users, n) array."""
    for user_id, row, row_scores in zip(user_ids.tolist(), items, scores, strict=True):
        yield user_id, encode_list(fragments, row, row_scores)
