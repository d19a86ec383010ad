"""The original project's split: 60/20/20 of the ratings, stratified by user, seed 42."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.model_selection import train_test_split

from batch.evaluation.scoring import Truth
from batch.interactions import Interactions
from batch.movielens import Ratings
from lookup_api.contract.errors import RecsysError

log = logging.getLogger(__name__)


class EvaluationError(RecsysError, ValueError):
    """The data cannot be split or scored under the protocol."""


@dataclass(frozen=True)
class Split:
    """Row positions into one :class:`Ratings` for each part (disjoint, together all ratings)."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def split_ratings(ratings: Ratings, seed: int = 42, test_size: float = 0.2,
                  validation_size: float = 0.2) -> Split:
    """Split like the original: test first, then validation out of the rest, stratified by user.

    Equivalent to ``train_test_split(ratings, test_size=0.2, stratify=user, random_state=seed)``
    followed by the same call with ``test_size=0.2 / 0.8`` on what is left.
    """
    index = np.arange(len(ratings))
    try:
        rest, test = train_test_split(index, test_size=test_size, stratify=ratings.user_ids,
                                      random_state=seed)
        train, validation = train_test_split(rest, test_size=validation_size / (1 - test_size),
                                             stratify=ratings.user_ids[rest], random_state=seed)
    except ValueError as exc:  # e.g. a user with a single rating cannot be stratified
        raise EvaluationError(f"cannot split the ratings by user: {exc}") from None
    log.info("split: train %s, validation %s, test %s ratings", len(train), len(validation), len(test))
    return Split(np.sort(train), np.sort(validation), np.sort(test))


@dataclass(frozen=True)
class Fold:
    """What one evaluation fits on and scores against.

    ``data`` is the fitted interactions; ``heldout`` is (n_users, n_items) CSR of held-out
    ratings whose movie is in the fitted catalogue; ``n_relevant`` (n_users,) counts every
    held-out rating >= threshold, including movies the fitted data never saw (they cannot
    be recommended, but they stay in recall's denominator).  ``cold_users`` and
    ``cold_ratings`` are the held-out ratings of movies the fitted data never saw (for RMSE).
    """

    data: Interactions
    heldout: sp.csr_matrix
    n_relevant: np.ndarray
    threshold: float
    cold_users: np.ndarray
    cold_ratings: np.ndarray

    def relevant(self) -> sp.csr_matrix:
        """Return the binary (n_users, n_items) CSR of relevant held-out movies."""
        rel = self.heldout.copy()
        rel.data = (rel.data >= self.threshold).astype(np.float32)
        rel.eliminate_zeros()
        return rel

    def users(self) -> np.ndarray:
        """Return the row indices of every user with at least one relevant held-out movie."""
        return np.flatnonzero(self.n_relevant > 0)

    def truth(self, users: np.ndarray | None = None) -> Truth:
        """Return what ``users`` (default: :meth:`users`) liked in the held-out part, for scoring."""
        users = self.users() if users is None else users
        return Truth(self.relevant()[users], self.n_relevant[users], self.data.n_items)


def make_fold(ratings: Ratings, fit: np.ndarray, heldout: np.ndarray, threshold: float = 4.0) -> Fold:
    """Fit on ``ratings[fit]``, hold out ``ratings[heldout]`` (positions); relevance = rating >= threshold."""
    data = Interactions.from_ratings(ratings.take(fit))
    held = ratings.take(heldout)
    rows, cols = data.user_index(held.user_ids), data.item_index(held.movie_ids)
    relevant = held.ratings >= threshold
    n_relevant = np.bincount(rows[(rows >= 0) & relevant], minlength=data.n_users)
    known = (rows >= 0) & (cols >= 0)
    matrix = sp.csr_matrix((held.ratings[known], (rows[known], cols[known])),
                           shape=(data.n_users, data.n_items), dtype=np.float32)
    matrix.sort_indices()
    dropped = int((rows < 0).sum())
    if dropped:
        log.info("%s held-out ratings belong to users absent from the fitted data (cold users)", dropped)
    if not n_relevant.any():
        raise EvaluationError(f"no held-out rating >= {threshold:g}: nothing to evaluate")
    cold = (rows >= 0) & (cols < 0)
    return Fold(data, matrix, n_relevant, threshold, rows[cold], held.ratings[cold])
