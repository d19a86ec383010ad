"""The one scoring function of the evaluation: lists in, curves, @10 figures and per-user values out.

Every row of ``evaluate``, every trial of ``tune`` and every cold-start rule is scored here, against
a :class:`Truth` (a fold's warm users, or the cold users of a time split).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from batch.evaluation.metrics import coverage_curve, user_metrics


@dataclass(frozen=True)
class Truth:
    """What a set of evaluated users liked in the held-out part.

    ``relevant`` (n_users, n_items) binary CSR over the fitted catalogue; ``n_relevant`` (n_users,)
    counts every relevant held-out movie, including ones the fitted data never saw (> 0 each);
    ``n_items``: the catalogue size (coverage's denominator).
    """

    relevant: sp.csr_matrix
    n_relevant: np.ndarray
    n_items: int

    def __len__(self) -> int:
        return len(self.n_relevant)

    def stack(self, other: Truth) -> Truth:
        """Both sets of users, this one first (e.g. warm then cold: *all* users)."""
        return Truth(sp.vstack([self.relevant, other.relevant]).tocsr(),
                     np.concatenate([self.n_relevant, other.n_relevant]), self.n_items)


@dataclass(frozen=True)
class Scores:
    """``curves``: ``{metric: [mean at k = 1..K]}`` rounded to 6 decimals (the reports' form);
    ``per_user``: each user's P@10 and NDCG@10 (paired comparisons)."""

    curves: dict[str, list[float]]
    per_user: dict[str, np.ndarray]

    def at_10(self) -> dict[str, float]:
        """P@10 and NDCG@10, rounded to 5 decimals."""
        return {"precision@10": round(float(self.curves["precision"][9]), 5),
                "ndcg@10": round(float(self.curves["ndcg"][9]), 5)}

    def key(self) -> tuple[float, float]:
        """The order in which tuning compares results: P@10, ties by NDCG@10."""
        at = self.at_10()
        return at["precision@10"], at["ndcg@10"]


def pad(recs: np.ndarray, k: int) -> np.ndarray:
    """Cut or pad (with -1) ``recs`` to exactly ``k`` columns."""
    if recs.shape[1] >= k:
        return recs[:, :k]
    return np.pad(recs, ((0, 0), (0, k - recs.shape[1])), constant_values=-1)


def score(recs: np.ndarray, truth: Truth, k: int = 10) -> Scores:
    """Score ``recs`` (len(truth), any width) item ids, best first, -1 padded, at k = 1..max(k, 10)."""
    recs = pad(np.asarray(recs, dtype=np.int64), max(k, 10))
    if len(recs) != len(truth):
        raise ValueError(f"{len(recs)} lists for {len(truth)} users")
    users = user_metrics(recs, truth.relevant, truth.n_relevant)
    curves = {name: values.mean(axis=0) for name, values in users.items()}
    curves["coverage"] = coverage_curve(recs, truth.n_items)
    rounded = {name: [round(float(v), 6) for v in values] for name, values in curves.items()}
    return Scores(rounded, {"precision@10": users["precision"][:, 9], "ndcg@10": users["ndcg"][:, 9]})


def paired_difference(a: Scores, b: Scores) -> dict[str, dict[str, float]]:
    """Mean and standard error of the per-user difference a - b in P@10 and NDCG@10 (same users)."""
    out = {}
    for metric in ("precision@10", "ndcg@10"):
        diff = a.per_user[metric] - b.per_user[metric]
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        out[metric] = {"difference": round(float(diff.mean()), 5), "standard_error": round(se, 5)}
    return out


def served(items: np.ndarray, n_users: int, k: int) -> np.ndarray:
    """Return the one list ``items`` (n,) repeated for ``n_users`` users, cut or -1 padded to ``k``."""
    row = np.full(k, -1, dtype=np.int64)
    row[: min(k, len(items))] = items[:k]
    return np.repeat(row[None, :], n_users, axis=0)
