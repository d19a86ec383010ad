"""``recsys-batch evaluate`` and ``tune`` end to end on small generated data (CliRunner)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from batch.cli import cli
from batch.evaluation.split import split_ratings
from batch.evaluation.tuning import SMALL, tune
from batch.movielens import Ratings
from batch.movielens_ratings import load_dir
from batch.params import TUNED_PATH, Params, load_params, tuned_document

SMALL_PARAMS = {"params": {"als_factors": 8, "svd_factors": 8, "svd_epochs": 5, "candidates": 30,
                           "content_candidates": 10, "ranker": "blend", "blend_form": "product",
                           "blend_als": 1.0}, "baselines": {"ease_l2": 50.0}}


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_evaluate_end_to_end_writes_table_json_and_report(small_dir, tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps(SMALL_PARAMS))
    out, report = tmp_path / "eval.json", tmp_path / "report"
    result = invoke("--data-dir", str(small_dir), "-q", "evaluate", "--protocol", "random", "--params",
                    str(params), "--json", str(out), "--report", str(report), "--original-users", "50")
    assert result.exit_code == 0, result.output
    for name in ("popularity", "most-rated", "TF-IDF content only", "ALS only", "SVD rating", "EASE (l2=50)",
                 "original pipeline (ALS+TF-IDF -> SVD)", "default pipeline (blend)", "original protocol"):
        assert name in result.output
    assert "temporal" not in result.output
    doc = json.loads(out.read_text())
    assert list(doc["protocols"]) == ["random"]
    doc = doc["protocols"]["random"]
    keys = [r["key"] for r in doc["rows"]]
    assert keys == ["popularity", "most_rated", "content", "als_original", "als", "svd_full", "ease",
                    "original", "default", "original@original", "default@original"]
    assert doc["protocol"]["fit_on"] == "train+validation" and doc["protocol"]["phase"] == "test"
    assert doc["params"]["default"]["ranker"] == "blend" and doc["params"]["ease_l2"] == 50.0
    for row in doc["rows"]:
        assert set(row["curves"]) == {"precision", "recall", "ndcg", "map", "hit_rate", "coverage"}
        assert all(len(v) == 50 and all(0 <= x <= 1 for x in v) for v in row["curves"].values())
        assert row["users"] == (50 if row["protocol"] == "original" else doc["protocol"]["users"])
    by_key = {r["key"]: r for r in doc["rows"]}
    assert by_key["default"]["rmse"] > 0 and by_key["original"]["mae"] > 0
    assert (report / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report / "evaluation.md").read_text()
    assert "| default pipeline (blend) |" in page and "![random](curves.png)" in page


def test_evaluate_runs_both_protocols_by_default(tmp_path):
    from tests.synth import timed_dataset, write_dataset

    rows, movies, _ = timed_dataset()
    directory = write_dataset(tmp_path / "timed", rows, movies)
    params = tmp_path / "params.json"
    params.write_text(json.dumps({**SMALL_PARAMS, "baselines": {"ease_l2": 50.0, "als_pop": 0.5}}))
    out, report = tmp_path / "eval.json", tmp_path / "report"
    result = invoke("--data-dir", str(directory), "-q", "evaluate", "--params", str(params),
                    "--json", str(out), "--report", str(report), "--original-users", "50")
    assert result.exit_code == 0, result.output
    for text in ("random split", "temporal split", "warm users", "cold users", "all users",
                 "cold-start rules (chosen on validation)", "ALS + popularity (weight 0.5)",
                 "published fallback vs original fallback"):
        assert text in result.output
    doc = json.loads(out.read_text())
    assert list(doc["protocols"]) == ["random", "temporal"]
    temporal = doc["protocols"]["temporal"]
    assert temporal["protocol"]["users"]["cold"] > 0 and temporal["protocol"]["users"]["warm"] > 0
    assert {r["segment"] for r in temporal["rows"]} == {"warm", "cold", "all"}
    assert (report / "temporal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report / "evaluation.md").read_text()
    for text in ("## Temporal split", "### Warm users", "### Cold users", "### All users",
                 "### Cold-start lists", "![temporal](temporal.png)", "validation_utc"):
        assert text in page


def test_evaluate_reports_data_problems_in_one_line(tmp_path):
    from tests.synth import write_dataset

    ratings = [(1, 1, 5, 0), (1, 2, 4, 0), (2, 1, 4, 0)]  # user 2 has a single rating
    directory = write_dataset(tmp_path / "tiny", ratings, [(1, "A (1990)", ["Drama"]), (2, "B (1991)", [])])
    result = CliRunner().invoke(cli, ["--data-dir", str(directory), "evaluate"])
    assert result.exit_code == 1 and "cannot split the ratings by user" in result.output


def test_tune_quick_writes_a_loadable_versioned_file(small_dir, tmp_path):
    target = tmp_path / "tuned.json"
    result = invoke("--data-dir", str(small_dir), "-q", "tune", "--quick", "--output", str(target))
    assert result.exit_code == 0, result.output
    doc = tuned_document(target)
    assert {"version", "created_at", "params", "validation", "search_space", "trials", "baselines"} \
        <= set(doc)
    assert doc["protocol"]["scored_on"] == "validation"
    params = load_params(target)
    assert params.ranker == "blend" and params.als_factors == 8
    assert doc["baselines"]["ease_l2"] in SMALL.ease_l2


def test_tune_never_reads_the_test_part(small_dir):
    ratings, movies = load_dir(small_dir)
    test = split_ratings(ratings).test
    scrambled = ratings.ratings.copy()
    scrambled[test] = np.random.default_rng(0).integers(1, 6, size=len(test))
    other = Ratings(ratings.user_ids, ratings.movie_ids, scrambled, ratings.timestamps)
    first, second = tune(ratings, movies, space=SMALL), tune(other, movies, space=SMALL)
    assert first["params"] == second["params"]
    assert first["trials"] == second["trials"]


def test_the_committed_tuned_file_serves_the_blend():
    if not TUNED_PATH.exists():
        pytest.skip("no tuned file yet")
    doc = tuned_document()
    params = load_params()
    assert params.ranker == "blend" and params != Params()
    assert doc["protocol"]["scored_on"] == "validation" and doc["validation"]["default"]["precision@10"] > 0
    assert "test" not in json.dumps(doc["validation"])
    temporal = doc["temporal"]  # refined on the time split's validation phase, test never read
    assert temporal["protocol"]["scored_on"] == "validation"
    assert "test" not in json.dumps(temporal["validation"])
    assert {k: getattr(params, k) for k in temporal["chosen"]} == temporal["chosen"]
    assert params.popularity_rule != "mean" and doc["baselines"]["als_pop"] > 0


def test_tune_temporal_refines_the_file_without_reading_test(tmp_path):
    from tests.synth import timed_dataset, write_dataset

    rows, movies, _ = timed_dataset()
    directory = write_dataset(tmp_path / "timed", rows, movies)
    target = tmp_path / "tuned.json"
    target.write_text(json.dumps(SMALL_PARAMS))
    result = invoke("--data-dir", str(directory), "-q", "tune", "--protocol", "temporal", "--quick",
                    "--output", str(target))
    assert result.exit_code == 0, result.output
    doc = tuned_document(target)
    assert doc["params"]["als_factors"] == 8 and doc["baselines"]["ease_l2"] == 50.0
    assert doc["temporal"]["chosen"]["popularity_rule"] in ("mean", "damped", "count", "liked")
    assert load_params(target).popularity_rule == doc["temporal"]["chosen"]["popularity_rule"]
    # Scrambling the time split's test part changes no temporal-validation number; only the random
    # guard sees those ratings (they are in the random split's train/validation, never its test).
    from batch.evaluation.temporal import split_by_time
    from batch.evaluation.tune_temporal import BLENDS, tune_temporal

    ratings, movies_ = load_dir(directory)
    base = load_params(target)

    def scrambled(part):
        stars = ratings.ratings.copy()
        stars[part] = np.random.default_rng(0).integers(1, 6, size=len(part))
        return Ratings(ratings.user_ids, ratings.movie_ids, stars, ratings.timestamps)

    def temporal_only(doc):
        return [{k: v for k, v in t.items() if k != "random"} for t in doc["trials"]]

    time_test = split_by_time(ratings).test
    both_tests = np.intersect1d(time_test, split_ratings(ratings).test)
    first = tune_temporal(ratings, movies_, base, 50.0, blends=BLENDS[:3])
    second = tune_temporal(scrambled(time_test), movies_, base, 50.0, blends=BLENDS[:3])
    third = tune_temporal(scrambled(both_tests), movies_, base, 50.0, blends=BLENDS[:3])
    assert temporal_only(first) == temporal_only(second)
    assert first["trials"] == third["trials"] and first["chosen"] == third["chosen"]


@pytest.mark.parametrize("command", ["evaluate", "tune"])
def test_help_has_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Example:" in result.output
