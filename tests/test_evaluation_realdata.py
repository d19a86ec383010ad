"""The full ``evaluate`` on the real MovieLens 1M with the committed tuned parameters (about a minute)."""

from __future__ import annotations

import time

import pytest

from batch.evaluation.evaluate import evaluate
from batch.movielens_ratings import load_dir
from batch.params import load_params, tuned_document

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def report(real_data):
    ratings, movies = load_dir(real_data)
    started = time.perf_counter()
    doc = evaluate(ratings, movies, load_params(), ease_l2=tuned_document()["baselines"]["ease_l2"])
    doc["wall"] = time.perf_counter() - started
    return doc


def at10(report, key, metric="precision"):
    return next(r for r in report["rows"] if r["key"] == key)["curves"][metric][9]


def test_default_pipeline_reaches_the_targets_and_wins_the_table(report):
    p10, ndcg10 = at10(report, "default"), at10(report, "default", "ndcg")
    print(f"\ndefault P@10 {p10:.4f} NDCG@10 {ndcg10:.4f}; ALS {at10(report, 'als'):.4f}, "
          f"EASE {at10(report, 'ease'):.4f}, original {at10(report, 'original'):.4f}; {report['wall']:.0f}s")
    assert p10 >= 0.30 and ndcg10 >= 0.37
    for other in ("als", "als_original", "ease", "svd_full", "most_rated", "content", "popularity"):
        assert p10 > at10(report, other) and ndcg10 > at10(report, other, "ndcg"), other
    assert p10 >= 1.6 * at10(report, "original")


def test_protocol_covers_every_user_with_a_relevant_test_movie(report):
    proto = report["protocol"]
    assert proto["sizes"] == {"train": 600125, "validation": 200042, "test": 200042}
    assert proto["users"] > 6000 and proto["fit_on"] == "train+validation"
    sampled = [r for r in report["rows"] if r["protocol"] == "original"]
    assert [r["users"] for r in sampled] == [200, 200]


def test_svd_rating_errors_and_run_time(report):
    default = next(r for r in report["rows"] if r["key"] == "default")
    assert default["rmse"] <= 0.87 and default["mae"] < default["rmse"]
    assert report["wall"] <= 180
