"""The full ``evaluate`` (both protocols, one run) on the real MovieLens 1M with the committed tuned file."""

from __future__ import annotations

import time

import pytest

from batch.evaluation.evaluate import evaluate_protocols
from batch.movielens_ratings import load_dir
from batch.params import load_params, tuned_document

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def both(real_data):
    ratings, movies = load_dir(real_data)
    baselines = tuned_document()["baselines"]
    started = time.perf_counter()
    doc = evaluate_protocols(ratings, movies, load_params(), ease_l2=baselines["ease_l2"],
                             als_pop=baselines["als_pop"])
    doc["wall"] = time.perf_counter() - started
    return doc


@pytest.fixture(scope="module")
def report(both):
    return both["protocols"]["random"]


@pytest.fixture(scope="module")
def temporal(both):
    return both["protocols"]["temporal"]


def at10(report, key, metric="precision"):
    return next(r for r in report["rows"] if r["key"] == key)["curves"][metric][9]


def test_default_pipeline_reaches_the_targets_and_wins_the_table(report):
    p10, ndcg10 = at10(report, "default"), at10(report, "default", "ndcg")
    print(f"\ndefault P@10 {p10:.4f} NDCG@10 {ndcg10:.4f}; ALS {at10(report, 'als'):.4f}, "
          f"EASE {at10(report, 'ease'):.4f}, original {at10(report, 'original'):.4f}")
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


def test_svd_rating_errors_and_run_time(report, both):
    default = next(r for r in report["rows"] if r["key"] == "default")
    assert default["rmse"] <= 0.87 and default["mae"] < default["rmse"]
    assert both["wall"] <= 240  # both protocols; a loose bound on a shared machine (typically ~60 s)


def test_temporal_cuts_split_like_the_original_file(temporal):
    proto = temporal["protocol"]
    # PROVENANCE.txt: imputed timestamps all lie below 975768738, the global 80%-by-time point;
    # cuts at or after it split exactly like the original file.
    assert proto["cuts"]["validation"] >= 975768738 and proto["cuts"]["test"] > proto["cuts"]["validation"]
    assert proto["sizes"] == {"train": 800168, "validation": 100021, "test": 100020}
    assert proto["phase"] == "test" and proto["fit_on"] == "train+validation"
    assert proto["users"]["cold"] > 0 and proto["users"]["warm"] > 1000


def test_temporal_published_fallback_doubles_the_original_rule_for_cold_users(temporal):
    ours, seed = at10(temporal, "fallback@cold"), at10(temporal, "popularity@cold")
    users = temporal["protocol"]["users"]["cold"]
    print(f"\ncold users ({users}): published {ours:.4f}, original {seed:.4f}")
    assert ours >= 2 * seed
    assert temporal["fallback"]["published"] == temporal["fallback"]["chosen_on_validation"]


def test_temporal_default_pipeline_leads_for_warm_users(temporal):
    p10 = at10(temporal, "default")
    keys = ("als", "ease", "als_pop", "popularity", "most_rated", "fallback")
    others = {k: at10(temporal, k) for k in keys}
    print(f"\nwarm users: default {p10:.4f}; {others}")
    assert p10 >= max(others.values())
    assert at10(temporal, "default@all") > at10(temporal, "original@all")
