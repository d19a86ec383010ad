""""More like this": each item's most similar items, from plain arrays, chunked over items.

:func:`similar_items` blends up to three item-item cosine similarities, each computed one block
of rows at a time (``chunk`` items x all items: never a dense n_items x n_items matrix, so ML-25M's
55k movies need ``chunk * 55k * 4`` bytes per signal at a time):

- ``likes``: a sparse (n_users, n_items) matrix of liked ratings: co-occurrence cosine
  ``|U_i & U_j| / sqrt(|U_i| |U_j|)``, shrunk by ``shrink`` (``c_ij / (sqrt(n_i n_j) + shrink)``);
- ``factors``: a dense (n_items, f) item-factor matrix (ALS's ``item_factors``): cosine;
- ``genres``: a sparse (n_items, g) TF-IDF genre matrix, rows L2-normalised: cosine.

Each row keeps its top ``k`` by ``argpartition`` (the item itself excluded); ``prior`` (n_items,)
in [0, 1) breaks ties toward popular items.  Nothing here knows the model classes: callers pass
arrays (``batch/job.py`` passes the trained bundle's, ``batch/evaluation/similar.py`` its own fits).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

SIGNALS = ("likes", "factors", "genres")


def _normalised_factors(factors: np.ndarray) -> np.ndarray:
    f = np.asarray(factors, dtype=np.float32)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.where(norms > 0, norms, 1.0)


def _likes_columns(likes: sp.spmatrix) -> tuple[sp.csc_matrix, np.ndarray]:
    binary = sp.csc_matrix(likes, dtype=np.float32, copy=True)
    binary.data[:] = 1.0
    binary.eliminate_zeros()
    counts = np.asarray(binary.sum(axis=0)).ravel()
    return binary, np.sqrt(counts, dtype=np.float32)


def blocks(n_items: int, *, likes: sp.spmatrix | None = None, factors: np.ndarray | None = None,
           genres: sp.spmatrix | None = None, weights: dict[str, float] | None = None,
           shrink: float = 10.0, chunk: int = 512) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(rows, similarity block)``: the blended similarity of items ``rows`` to every item,
    float32 (len(rows), n_items)."""
    weights = {s: w for s, w in (weights or {}).items() if w}
    if unknown := set(weights) - set(SIGNALS):
        raise ValueError(f"unknown similarity signal(s) {sorted(unknown)}; choose from {SIGNALS}")
    given = {"likes": likes, "factors": factors, "genres": genres}
    if missing := [s for s in weights if given[s] is None]:
        raise ValueError(f"weights name {missing} but no such array was given")
    if "likes" in weights:
        cols, norms = _likes_columns(likes)
        cols_t = cols.T.tocsr()
    if "factors" in weights:
        unit = _normalised_factors(factors)
    if "genres" in weights:
        tfidf = sp.csr_matrix(genres, dtype=np.float32)
        tfidf_t = tfidf.T.tocsc()
    for start in range(0, n_items, chunk):
        rows = slice(start, min(start + chunk, n_items))
        block = np.zeros((rows.stop - rows.start, n_items), dtype=np.float32)
        if "likes" in weights:
            co = (cols_t[rows] @ cols).toarray()
            denom = np.multiply.outer(norms[rows], norms)
            denom += np.float32(shrink)
            np.maximum(denom, np.float32(1e-12), out=denom)
            co /= denom
            co *= np.float32(weights["likes"])
            block += co
            del co, denom
        if "factors" in weights:
            block += np.float32(weights["factors"]) * (unit[rows] @ unit.T)
        if "genres" in weights:
            block += np.float32(weights["genres"]) * (tfidf[rows] @ tfidf_t).toarray()
        yield rows, block


def similar_items(n_items: int, k: int, *, likes: sp.spmatrix | None = None,
                  factors: np.ndarray | None = None, genres: sp.spmatrix | None = None,
                  weights: dict[str, float] | None = None, prior: np.ndarray | None = None,
                  shrink: float = 10.0, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Return each item's top ``k`` similar items (n_items, k) column indices, -1 padded, best
    first, and their blended similarity (float32, -inf on padding).

    An item with no similarity above 0 to another keeps fewer than ``k`` (padding): better none
    than arbitrary.  ``prior`` adds ``1e-6 * prior`` to break ties.
    """
    k = min(k, max(n_items - 1, 0))
    out_items = np.full((n_items, k), -1, dtype=np.int64)
    out_scores = np.full((n_items, k), -np.inf, dtype=np.float32)
    if k == 0:
        return out_items, out_scores
    tie = None if prior is None else (np.asarray(prior, dtype=np.float32) * np.float32(1e-6))
    for rows, block in blocks(n_items, likes=likes, factors=factors, genres=genres, weights=weights,
                              shrink=shrink, chunk=chunk):
        positive = block > 0
        if tie is not None:
            block += tie
        block[~positive] = -np.inf
        local = np.arange(rows.stop - rows.start)
        block[local, local + rows.start] = -np.inf  # never the item itself
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")
        top, scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(scores, order, axis=1)
        out_items[rows] = np.where(np.isfinite(scores), top, -1)
        out_scores[rows] = scores
    return out_items, out_scores


def tfidf_genres(genres: list[list[str]]) -> sp.csr_matrix:
    """Return the (n_items, n_genres) TF-IDF matrix of genre lists, rows L2-normalised (smooth idf)."""
    names = sorted({g for gs in genres for g in gs})
    index = {g: i for i, g in enumerate(names)}
    rows = [i for i, gs in enumerate(genres) for _ in gs]
    cols = [index[g] for gs in genres for g in gs]
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                      shape=(len(genres), max(len(names), 1)))
    m.sum_duplicates()
    m.data[:] = 1.0
    df = np.asarray((m > 0).sum(axis=0)).ravel()
    idf = (np.log((1 + len(genres)) / (1 + df)) + 1).astype(np.float32)
    m = m @ sp.diags(idf)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1 / np.where(norms > 0, norms, 1)) @ m, dtype=np.float32)
