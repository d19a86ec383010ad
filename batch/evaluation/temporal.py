"""The temporal protocol's split: one global cut by time, validation before test, warm and cold users.

Train is the earliest ratings, validation the next ones, test the latest: what a nightly
model trained on everything so far meets the following days.  Users with held-out ratings
but none in the fitted part are *cold*: the product serves them the popular list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from batch.evaluation.scoring import Truth
from batch.evaluation.split import EvaluationError, Split
from batch.interactions import Interactions
from batch.movielens import Ratings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimeSplit(Split):
    """A :class:`Split` by time: ``validation_cut`` <= validation < ``test_cut`` <= test (Unix seconds)."""

    validation_cut: int = 0
    test_cut: int = 0


def split_by_time(ratings: Ratings, validation_share: float = 0.1, test_share: float = 0.1) -> TimeSplit:
    """Cut at the timestamps below which ``1 - validation_share - test_share`` (and ``1 - test_share``)
    of the ratings lie; ratings sharing a timestamp always land on the same side.

    Train = ``t < validation_cut``, validation = ``validation_cut <= t < test_cut``, test = the rest.
    """
    times = np.asarray(ratings.timestamps)
    ordered = np.sort(times)
    n = len(ordered)

    def cut(share: float) -> int:
        position = int(np.ceil(share * n))
        if not 0 < position < n:
            raise EvaluationError(f"cannot cut {n} ratings at {share:.0%} of the time order")
        return int(ordered[position])

    validation_cut = cut(1 - validation_share - test_share)
    test_cut = cut(1 - test_share)
    parts = [np.flatnonzero(times < validation_cut),
             np.flatnonzero((times >= validation_cut) & (times < test_cut)),
             np.flatnonzero(times >= test_cut)]
    if not all(len(p) for p in parts):
        raise EvaluationError("the time split leaves a part empty (too many ratings share a timestamp)")
    log.info("time split at %s and %s: train %s, validation %s, test %s ratings",
             validation_cut, test_cut, *map(len, parts))
    return TimeSplit(*parts, validation_cut=validation_cut, test_cut=test_cut)


@dataclass(frozen=True)
class ColdUsers:
    """Held-out ratings of users absent from the fitted data.

    ``user_ids`` (n_cold,) raw ids of cold users with at least one relevant held-out movie;
    ``relevant`` (n_cold, n_items) binary CSR over the fitted catalogue; ``n_relevant``
    (n_cold,) counts every relevant held-out movie, including ones the fitted data never saw.
    """

    user_ids: np.ndarray
    relevant: sp.csr_matrix
    n_relevant: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)

    def truth(self) -> Truth:
        """What the cold users liked, for scoring."""
        return Truth(self.relevant, self.n_relevant, self.relevant.shape[1])


def cold_users(data: Interactions, held: Ratings, threshold: float = 4.0) -> ColdUsers:
    """Collect the cold users of ``held`` (no row in the fitted ``data``) with a relevant movie."""
    cold = data.user_index(held.user_ids) < 0
    held = held.take(cold)
    user_ids, rows = np.unique(held.user_ids, return_inverse=True)
    liked = held.ratings >= threshold
    n_relevant = np.bincount(rows[liked], minlength=len(user_ids))
    cols = data.item_index(held.movie_ids)
    known = liked & (cols >= 0)
    relevant = sp.csr_matrix((np.ones(int(known.sum()), dtype=np.float32), (rows[known], cols[known])),
                             shape=(len(user_ids), data.n_items))
    relevant.sort_indices()
    keep = n_relevant > 0
    return ColdUsers(user_ids[keep], relevant[keep], n_relevant[keep])
