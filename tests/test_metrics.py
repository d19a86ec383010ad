"""Ranking metrics against hand-computed cases and a plain per-user reference loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from batch.evaluation.metrics import coverage_curve, hits, ranking_curves, rating_errors


def _relevant(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    data = [(u, i) for u, items in enumerate(rows) for i in items]
    r, c = zip(*data, strict=True) if data else ((), ())
    return sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(len(rows), n_items))


def test_one_user_by_hand():
    # relevant {2, 4}; recommended 1, 2, 3, 4: hits at ranks 2 and 4
    curves = ranking_curves(np.array([[1, 2, 3, 4]]), _relevant([[2, 4]], 6), np.array([2]))
    np.testing.assert_allclose(curves["precision"], [0, 1 / 2, 1 / 3, 2 / 4])
    np.testing.assert_allclose(curves["recall"], [0, 1 / 2, 1 / 2, 1])
    dcg4 = 1 / math.log2(3) + 1 / math.log2(5)
    np.testing.assert_allclose(curves["ndcg"][3], dcg4 / (1 + 1 / math.log2(3)))
    np.testing.assert_allclose(curves["ndcg"][1], (1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # AP@4 = (P@2 + P@4) / min(4, 2) = (1/2 + 1/2) / 2; AP@2 = (1/2) / 2
    np.testing.assert_allclose(curves["map"], [0, 1 / 4, 1 / 4, 1 / 2])
    np.testing.assert_allclose(curves["hit_rate"], [0, 1, 1, 1])
    np.testing.assert_allclose(curves["coverage"], [1 / 6, 2 / 6, 3 / 6, 4 / 6])


def test_means_over_users_padding_and_unreachable_items():
    recs = np.array([[0, -1, -1], [3, 1, 2]])
    relevant = _relevant([[0], [1]], 4)
    # user 1 has 2 relevant held-out movies, one of which the fitted data never saw
    curves = ranking_curves(recs, relevant, np.array([1, 2]))
    np.testing.assert_allclose(curves["precision"], [(1 + 0) / 2, (1 / 2 + 1 / 2) / 2, (1 / 3 + 1 / 3) / 2])
    np.testing.assert_allclose(curves["recall"], [(1 + 0) / 2, (1 + 1 / 2) / 2, (1 + 1 / 2) / 2])
    ideal_user1 = 1 + 1 / math.log2(3)
    np.testing.assert_allclose(curves["ndcg"][2], (1 + (1 / math.log2(3)) / ideal_user1) / 2)
    np.testing.assert_allclose(curves["hit_rate"], [0.5, 1, 1])
    assert not hits(np.array([[-1, -1]]), _relevant([[0]], 2)).any()  # padding never hits


def test_coverage_counts_distinct_items_by_depth():
    np.testing.assert_allclose(coverage_curve(np.array([[0, 1], [1, 2]]), 4), [2 / 4, 3 / 4])
    np.testing.assert_allclose(coverage_curve(np.array([[-1, -1]]), 4), [0, 0])


def test_users_without_relevant_items_are_rejected():
    with pytest.raises(ValueError, match="at least one relevant"):
        ranking_curves(np.array([[0]]), _relevant([[]], 2), np.array([0]))


def test_rating_errors_by_hand():
    errors = rating_errors(np.array([3.0, 4.0, 5.0]), np.array([4.0, 4.0, 3.0]))
    assert errors["rmse"] == pytest.approx(math.sqrt((1 + 0 + 4) / 3))
    assert errors["mae"] == pytest.approx(1.0)


def test_vectorised_metrics_equal_a_per_user_loop():
    rng = np.random.default_rng(3)
    n_users, n_items, k = 60, 40, 12
    recs = np.array([rng.permutation(n_items)[:k] for _ in range(n_users)])
    recs[rng.random(recs.shape) < 0.1] = -1
    rel_rows = [sorted(rng.choice(n_items, size=rng.integers(1, 8), replace=False).tolist())
                for _ in range(n_users)]
    n_rel = np.array([len(r) + int(rng.integers(0, 2)) for r in rel_rows])  # some unreachable
    curves = ranking_curves(recs, _relevant(rel_rows, n_items), n_rel)
    for cut in (1, 5, 12):
        p, r, nd, ap = [], [], [], []
        for u in range(n_users):
            top = [i for i in recs[u, :cut]]
            hit = [1.0 if i >= 0 and i in rel_rows[u] else 0.0 for i in top]
            p.append(sum(hit) / cut)
            r.append(sum(hit) / n_rel[u])
            dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hit))
            nd.append(dcg / sum(1 / math.log2(j + 2) for j in range(min(cut, n_rel[u]))))
            ap.append(sum(hit[j] * sum(hit[: j + 1]) / (j + 1) for j in range(cut)) / min(cut, n_rel[u]))
        assert curves["precision"][cut - 1] == pytest.approx(np.mean(p))
        assert curves["recall"][cut - 1] == pytest.approx(np.mean(r))
        assert curves["ndcg"][cut - 1] == pytest.approx(np.mean(nd))
        assert curves["map"][cut - 1] == pytest.approx(np.mean(ap))
        covered = {int(i) for i in recs[:, :cut].ravel() if i >= 0}
        assert curves["coverage"][cut - 1] == pytest.approx(len(covered) / n_items)
