"""The one model shape: ``recommend(users, exclude, n) -> (ids, scores)`` over fitted row indices.

Every candidate source and scorer (ALS, EASE, TF-IDF content, popularity, item-kNN, SVD) is a
dataclass of arrays fitted by its module's ``fit(data, *, settings...)`` (settings keyword-only,
without defaults: :mod:`batch.params` is their one home) and derives from :class:`Recommender`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class Recommender:
    """Mixin: shapes, unknown users and ``n`` beyond the catalogue handled once for every model.

    Subclasses provide ``n_users``, ``n_items`` and ``_recommend(users, exclude, n)`` for known users
    (row indices in ``0..n_users-1``) and ``1 <= n <= n_items``.
    """

    n_users: int
    n_items: int

    def recommend(self, users: np.ndarray, exclude: sp.csr_matrix | None,
                  n: int) -> tuple[np.ndarray, np.ndarray]:
        """Return each user's top-``n`` item ids and scores, best first, each (len(users), n').

        ``exclude`` is (n_users, n_items): each row's stored items are never returned (None:
        nothing excluded).  ``n' = min(n, n_items)``; short rows are padded with id -1, score -inf.
        Unknown users (a row index < 0 or >= ``n_users``) get :meth:`unknown` (default: -1 rows).
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        n = max(0, min(int(n), self.n_items))
        ids = np.full((len(users), n), -1, dtype=np.int64)
        scores = np.full((len(users), n), -np.inf, dtype=np.float32)
        if n == 0 or len(users) == 0:
            return ids, scores
        if exclude is None:
            exclude = sp.csr_matrix((self.n_users, self.n_items), dtype=np.float32)
        known = (users >= 0) & (users < self.n_users)
        if known.any():
            ids[known], scores[known] = self._recommend(users[known], exclude.tocsr(), n)
        if not known.all():
            ids[~known], scores[~known] = self.unknown(int((~known).sum()), n)
        invalid = ids < 0
        scores[invalid] = -np.inf
        return ids, scores

    def unknown(self, count: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows for ``count`` users the model was not fitted on: empty (-1) by default."""
        return np.full((count, n), -1, dtype=np.int64), np.full((count, n), -np.inf, dtype=np.float32)

    def _recommend(self, users: np.ndarray, exclude: sp.csr_matrix, n: int):
        raise NotImplementedError
