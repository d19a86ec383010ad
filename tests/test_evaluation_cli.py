"""``recsys-batch evaluate`` and ``tune`` end to end on small generated data (CliRunner)."""

from __future__ import annotations

import json
import re

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
                           "blend_als": 1.0},
                "baselines": {"random": {"ease": {"model": "ease", "settings": {"ease_l2": 50.0,
                                                                                "ease_weighting": "likes"},
                                                  "validation": {"precision@10": 0.1, "ndcg@10": 0.1},
                                                  "trials": 1}}}}


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_evaluate_end_to_end_writes_table_json_and_report(small_dir, tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps(SMALL_PARAMS))
    out, report = tmp_path / "eval.json", tmp_path / "report"
    result = invoke("--data-dir", str(small_dir), "-q", "evaluate", "--protocol", "random", "--params",
                    str(params), "--json", str(out), "--report", str(report), "--original-users", "50")
    assert result.exit_code == 0, result.output
    written = f"json: {out}\nreport: {report / 'evaluation.md'}, {report / 'curves.png'}\nevaluated in "
    assert written in result.output
    for name in ("popularity", "recency-window popularity (not tuned)", "TF-IDF content only", "ALS only",
                 "SVD rating", "EASE (l2 50, weighting likes)", "original pipeline (ALS+TF-IDF -> SVD)",
                 "default pipeline (blend, product)", "original protocol"):
        assert name in result.output
    assert "temporal" not in result.output
    doc = json.loads(out.read_text())
    assert list(doc["protocols"]) == ["random"]
    doc = doc["protocols"]["random"]
    keys = [r["key"] for r in doc["rows"]]
    assert keys == ["popularity", "recent_pop", "content", "als_original", "als", "ease", "knn", "svd_full",
                    "original", "default", "original@original", "default@original"]
    assert doc["protocol"]["fit_on"] == "train+validation" and doc["protocol"]["phase"] == "test"
    assert doc["params"]["default"]["ranker"] == "blend"
    assert doc["baselines"]["ease"]["settings"] == {"ease_l2": 50.0, "ease_weighting": "likes"}
    for row in doc["rows"]:
        assert set(row["curves"]) == {"precision", "recall", "ndcg", "map", "hit_rate", "coverage"}
        assert all(len(v) == 50 and all(0 <= x <= 1 for x in v) for v in row["curves"].values())
        assert row["users"] == (50 if row["protocol"] == "original" else doc["protocol"]["users"])
    by_key = {r["key"]: r for r in doc["rows"]}
    assert by_key["default"]["rmse"] > 0 and by_key["original"]["mae"] > 0
    assert (report / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report / "evaluation.md").read_text()
    assert "| default pipeline (blend, product) |" in page and "![random](curves.png)" in page
    assert "### Tuned baselines (random" in page and "ease_l2=50.0, ease_weighting=likes" in page


def test_evaluate_runs_both_protocols_by_default(tmp_path):
    from tests.synth import timed_dataset, write_dataset

    rows, movies, _ = timed_dataset()
    directory = write_dataset(tmp_path / "timed", rows, movies)
    params = tmp_path / "params.json"
    params.write_text(json.dumps(SMALL_PARAMS))
    out, report = tmp_path / "eval.json", tmp_path / "report"
    result = invoke("--data-dir", str(directory), "-q", "evaluate", "--params", str(params),
                    "--json", str(out), "--report", str(report), "--original-users", "50")
    assert result.exit_code == 0, result.output
    for text in ("random split", "temporal split", "warm users", "cold users", "all users",
                 "cold-start rules (chosen on validation)", "paired standard error",
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


def test_tune_quick_writes_a_loadable_versioned_file(tmp_path):
    from tests.synth import timed_dataset, write_dataset

    rows, movies, _ = timed_dataset()
    directory = write_dataset(tmp_path / "timed", rows, movies)
    target = tmp_path / "tuned.json"
    # a file of the older layout (version 1: trials as one list) gives only its parameters
    target.write_text(json.dumps({**SMALL_PARAMS, "version": 1, "trials": [{"stage": "svd"}]}))
    result = invoke("--data-dir", str(directory), "-q", "tune", "--quick", "--output", str(target))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.fullmatch(r"random \w+: \{.*\}, validation \{.*\}", lines[0]), lines[0]
    assert lines[-2].startswith("default pipeline (changes from the built-in defaults): {")
    assert re.fullmatch(rf"\d+ trials in \d+s; written to {re.escape(str(target))}", lines[-1]), lines[-1]
    doc = tuned_document(target)
    assert {"version", "created_at", "params", "validation", "search_space", "trials", "baselines",
            "fallback"} <= set(doc)
    assert doc["protocol"]["scored_on"] == "validation"
    for protocol in ("random", "temporal"):  # every tuned baseline, chosen from its grid
        section = doc["baselines"][protocol]
        assert set(section) == {"als", "ease", "knn", "recent_pop"}
        for key, chosen in section.items():
            assert chosen["settings"] in SMALL.grids[key] and chosen["trials"] == len(SMALL.grids[key])
    params = load_params(target)
    assert params.als_factors == doc["baselines"]["temporal"]["als"]["settings"]["als_factors"]
    assert params.ranker == "blend" and params.blend_form == "z"
    assert doc["validation"]["temporal"]["default_minus_best_baseline"]["precision@10"]["standard_error"] >= 0
    # the random protocol alone keeps the temporal sections of the file already there
    again = invoke("--data-dir", str(directory), "-q", "tune", "--quick", "--protocol", "random",
                   "--output", str(target))
    assert again.exit_code == 0, again.output
    redone = tuned_document(target)
    assert redone["baselines"]["temporal"] == doc["baselines"]["temporal"]
    assert redone["params"] == doc["params"]


def test_tune_never_reads_the_test_part(tmp_path):
    """Scrambling both protocols' test parts changes no validation number and no choice."""
    from batch.evaluation.temporal import split_by_time
    from tests.synth import timed_dataset, write_dataset

    rows, movies, _ = timed_dataset()
    ratings, movies = load_dir(write_dataset(tmp_path / "timed", rows, movies))
    tests = np.union1d(split_ratings(ratings).test, split_by_time(ratings).test)
    # ...a rating in both a validation or train part and the other protocol's test stays
    only_test = np.intersect1d(split_ratings(ratings).test, split_by_time(ratings).test)
    assert len(tests) > len(only_test) > 0
    scrambled = ratings.ratings.copy()
    scrambled[only_test] = np.random.default_rng(0).integers(1, 6, size=len(only_test))
    other = Ratings(ratings.user_ids, ratings.movie_ids, scrambled, ratings.timestamps)
    base = Params.from_dict(SMALL_PARAMS["params"])
    first, second = tune(ratings, movies, base, space=SMALL), tune(other, movies, base, space=SMALL)
    assert first["params"] == second["params"]
    def choices(sections):
        return {p: {k: (v["settings"], v["validation"]) for k, v in b.items()}
                for p, b in sections["baselines"].items()}

    assert first["trials"] == second["trials"] and choices(first) == choices(second)


def test_the_committed_tuned_file_serves_the_tuned_default():
    if not TUNED_PATH.exists():
        pytest.skip("no tuned file yet")
    doc = tuned_document()
    params = load_params()
    assert params.ranker == "blend" and params != Params()
    assert doc["protocol"]["scored_on"] == "validation"
    assert "test" not in json.dumps(doc["validation"])
    for protocol in ("random", "temporal"):
        assert set(doc["baselines"][protocol]) == {"als", "ease", "knn", "recent_pop"}
    assert {k: getattr(params, k) for k in doc["fallback"]["chosen"]} == doc["fallback"]["chosen"]


def test_evaluate_and_tune_without_the_eval_extra_say_what_to_install(small_dir):
    """A fresh interpreter where matplotlib cannot be found: one line, exit 1, the command to run."""
    import subprocess
    import sys

    code = ("import importlib.util, sys\n"
            "real = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda name, *a: None if name == 'matplotlib' else real(name, *a)\n"
            "from batch.cli import main\n"
            f"sys.argv = ['recsys-batch', '--data-dir', {str(small_dir)!r}, sys.argv[1]]\n"
            "main()\n")
    for command in ("evaluate", "tune"):
        result = subprocess.run([sys.executable, "-c", code, command], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "uv sync --extra batch --extra eval" in lines[0], result.stderr


@pytest.mark.parametrize("command", ["evaluate", "tune"])
def test_help_has_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Example:" in result.output
