"""Content candidates: TF-IDF over genres, items similar to what a user liked."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from batch.models.topn import chunked_top_n

log = logging.getLogger(__name__)


@dataclass
class ContentModel:
    """Item-item cosine similarity of TF-IDF genre vectors.

    ``vectors`` is (n_items, n_genres), L2-normalised, so ``vectors @ vectors.T`` is cosine.
    ``prior`` (n_items,) in [0, 1) breaks the many exact ties between items with
    identical genre sets in favour of more-rated movies.
    """

    vectors: sp.csr_matrix
    prior: np.ndarray

    def recommend(
        self,
        liked: sp.csr_matrix,
        seen: sp.csr_matrix,
        users: np.ndarray,
        n: int,
        chunk: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the ``n`` unseen items most similar to each user's liked items.

        ``liked`` and ``seen`` are (n_users, n_items); the score of an item is its mean
        cosine similarity to the user's liked items.  Users with no liked item get -1 rows.
        Work is chunked over users (see :func:`chunked_top_n`).
        """
        from sklearn.preprocessing import normalize

        # (n_genres, n_items) dense: a user chunk's scores are one small BLAS product
        # instead of a sparse x sparse product with a nearly dense result.
        genres_by_item = np.ascontiguousarray(self.vectors.T.toarray())

        def score(batch: np.ndarray) -> np.ndarray:
            rows = liked[batch]
            profile = (normalize(rows, norm="l1") @ self.vectors).toarray()  # mean liked genre vector
            s = profile @ genres_by_item
            s += 1e-3 * self.prior[None, :]
            s[np.diff(rows.indptr) == 0] = -np.inf  # nothing liked: no content candidates
            return s

        return chunked_top_n(score, users, seen, n, chunk)


def train_content(genres: list[list[str]], popularity: np.ndarray) -> ContentModel:
    """Fit TF-IDF on each item's genre list; ``popularity`` (n_items,) is its rating count."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # 2 s to import: only when fitting

    docs = ["|".join(g) for g in genres]
    vectorizer = TfidfVectorizer(
        tokenizer=lambda doc: [t for t in doc.split("|") if t],
        token_pattern=None,
        lowercase=False,
    )
    vectors = vectorizer.fit_transform(docs).astype(np.float32).tocsr()
    ranks = np.argsort(np.argsort(popularity, kind="stable"), kind="stable")
    prior = (ranks / max(len(ranks), 1)).astype(np.float32)
    log.info("TF-IDF: %s items x %s genres", vectors.shape[0], vectors.shape[1])
    return ContentModel(vectors, prior)
