"""Content candidates: TF-IDF over genres, items similar to what a user liked."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from batch.interactions import Interactions
from batch.models.base import Recommender
from batch.models.topn import chunked_top_n

log = logging.getLogger(__name__)


@dataclass
class ContentModel(Recommender):
    """Item-item cosine similarity of TF-IDF genre vectors, from each user's liked movies.

    ``vectors`` is (n_items, n_genres), L2-normalised, so ``vectors @ vectors.T`` is cosine.
    ``prior`` (n_items,) in [0, 1) breaks the many exact ties between items with
    identical genre sets in favour of more-rated movies.  ``liked`` (n_users, n_items) is binary.
    """

    vectors: sp.csr_matrix
    prior: np.ndarray
    liked: sp.csr_matrix

    @property
    def n_users(self) -> int:
        return self.liked.shape[0]

    @property
    def n_items(self) -> int:
        return self.vectors.shape[0]

    def _recommend(self, users: np.ndarray, exclude: sp.csr_matrix, n: int):
        """The score of an item is its mean cosine similarity to the user's liked items; users with
        no liked item get -1 rows.  Work is chunked over users (see :func:`chunked_top_n`)."""
        from sklearn.preprocessing import normalize

        # (n_genres, n_items) dense: a user chunk's scores are one small BLAS product
        # instead of a sparse x sparse product with a nearly dense result.
        genres_by_item = np.ascontiguousarray(self.vectors.T.toarray())
        liked = self.liked

        def score(batch: np.ndarray) -> np.ndarray:
            rows = liked[batch]
            profile = (normalize(rows, norm="l1") @ self.vectors).toarray()  # mean liked genre vector
            s = profile @ genres_by_item
            s += 1e-3 * self.prior[None, :]
            s[np.diff(rows.indptr) == 0] = -np.inf  # nothing liked: no content candidates
            return s

        return chunked_top_n(score, users, exclude, n)


def fit(data: Interactions, genres: list[list[str]], *, like_threshold: float) -> ContentModel:
    """Fit TF-IDF on each item's genre list (``genres``, one per column of ``data``)."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # 2 s to import: only when fitting

    docs = ["|".join(g) for g in genres]
    vectorizer = TfidfVectorizer(
        tokenizer=lambda doc: [t for t in doc.split("|") if t],
        token_pattern=None,
        lowercase=False,
    )
    vectors = vectorizer.fit_transform(docs).astype(np.float32).tocsr()
    counts = np.bincount(data.matrix.indices, minlength=data.n_items)
    ranks = np.argsort(np.argsort(counts, kind="stable"), kind="stable")
    prior = (ranks / max(len(ranks), 1)).astype(np.float32)
    log.info("TF-IDF: %s items x %s genres", vectors.shape[0], vectors.shape[1])
    return ContentModel(vectors, prior, data.liked(like_threshold))
