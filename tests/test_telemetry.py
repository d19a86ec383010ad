"""Batch telemetry: run meta, a real Pushgateway read back through its API, JSON logs, status age."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

from click.testing import CliRunner

from batch import telemetry
from batch.cli import cli
from batch.store import RunStore
from lookup_api.contract.keys import Keys
from tests.conftest import free_port
from tests.prom_helpers import get_json, pushgateway

SMALL = ["--top-n", "20", "--candidates", "30", "--content-candidates", "10", "--als-factors", "8",
         "--svd-factors", "8"]


def invoke(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def group(gateway: str, prefix: str) -> dict:
    """Return the Pushgateway's metric group for (job recsys-batch, prefix) as {name: [(labels, value)]}."""
    for g in get_json(f"{gateway}/api/v1/metrics")["data"]:
        if g["labels"] == {"job": "recsys-batch", "prefix": prefix}:
            return {name: [({k: v for k, v in m["labels"].items() if k not in ("job", "prefix", "instance")},
                            float(m["value"])) for m in fam["metrics"]]
                    for name, fam in g.items() if name.startswith("recsys_")}
    return {}


def value(metrics: dict, name: str) -> float:
    (_labels, v), = metrics[name]
    return v


def test_run_pushes_its_metrics_and_a_failure_keeps_the_last_success(redis_url, prefix, small_dir, client,
                                                                     tmp_path):
    base = ["--redis-url", redis_url, "--prefix", prefix]
    with pushgateway(tmp_path) as gateway:
        before = time.time()
        ran = invoke(*base, "--data-dir", str(small_dir), "run", *SMALL, "--pushgateway", gateway)
        assert ran.exit_code == 0, ran.output
        store = RunStore(client, Keys(prefix))
        run_id = store.current()
        pushed = group(gateway, prefix)
        assert value(pushed, "recsys_batch_success") == 1
        assert before <= value(pushed, "recsys_batch_last_success_timestamp_seconds") <= time.time()
        assert pushed["recsys_batch_run_info"] == [({"run_id": run_id}, 1.0)]
        assert value(pushed, "recsys_batch_users") == 300 and value(pushed, "recsys_batch_items") == 120
        assert value(pushed, "recsys_batch_popular_items") == len(store.popular_list(run_id)) > 0
        assert value(pushed, "recsys_batch_empty_lists") == 0
        stages = {labels["stage"]: v for labels, v in pushed["recsys_batch_stage_duration_seconds"]}
        assert {"load", "train_als", "train_svd", "publish", "total"} <= set(stages)
        assert all(v >= 0 for v in stages.values()) and stages["total"] >= stages["load"]

        meta = store.meta(run_id)  # the same figures, recorded with the run
        assert meta["success"] == "1" and before <= float(meta["last_success_ts"]) <= time.time()
        assert int(meta["popular_items"]) == value(pushed, "recsys_batch_popular_items")
        assert meta["empty_lists"] == "0"

        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "movies.dat").write_bytes((small_dir / "movies.dat").read_bytes())
        (bad / "ratings.dat").write_text("1::1::7::978300760\n")  # rating outside 1..5
        failed = invoke(*base, "--data-dir", str(bad), "run", *SMALL, env={"RECSYS_PUSHGATEWAY": gateway})
        assert failed.exit_code == 1 and "outside 1..5" in failed.output
        after = group(gateway, prefix)
        assert value(after, "recsys_batch_success") == 0
        assert after["recsys_batch_failure_info"] == [({"error": "DataError"}, 1.0)]
        assert value(after, "recsys_batch_last_failure_timestamp_seconds") >= value(
            pushed, "recsys_batch_last_success_timestamp_seconds")
        assert value(after, "recsys_batch_last_success_timestamp_seconds") == value(
            pushed, "recsys_batch_last_success_timestamp_seconds")  # kept: the no-success alert needs it
        assert store.current() == run_id  # the failed run published nothing


def test_an_unreachable_pushgateway_only_warns(redis_url, prefix, small_dir, client, caplog):
    nobody = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="batch.telemetry"):
        ran = invoke("--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(small_dir), "run",
                     *SMALL, "--pushgateway", nobody)
    assert ran.exit_code == 0, ran.output
    assert RunStore(client, Keys(prefix)).current() is not None
    assert any("could not push metrics" in r.getMessage() for r in caplog.records)


def test_a_pushgateway_password_is_never_logged(redis_url, prefix, small_dir, client, caplog):
    nobody = f"http://pusher:s3cret@127.0.0.1:{free_port()}"
    with caplog.at_level(logging.INFO, logger="batch.telemetry"):
        ran = invoke("--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(small_dir), "run",
                     *SMALL, "--pushgateway", nobody)
    assert ran.exit_code == 0, ran.output
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "could not push metrics to the Pushgateway http://pusher:***@127.0.0.1" in logged
    assert "s3cret" not in logged + ran.output


def test_json_logs_carry_run_id_stage_and_seconds(redis_url, prefix, small_dir):
    env = {**os.environ, "RECSYS_LOG_FORMAT": "json"}
    cmd = [sys.executable, "-c", "from batch.cli import main; main()", "--redis-url", redis_url,
           "--prefix", prefix, "--data-dir", str(small_dir), "run", *SMALL]
    ran = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0, ran.stderr
    records = [json.loads(line) for line in ran.stderr.splitlines()]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    stages = {r["stage"]: r for r in records if "stage" in r}
    run_id = ran.stdout.split()[1]
    assert {"load", "publish", "total"} <= set(stages)
    assert all(r["run_id"] == run_id and isinstance(r["seconds"], float) for r in stages.values())


def test_status_shows_the_live_runs_age(redis_url, prefix, publish_small, client):
    run_id = publish_small()
    client.hset(Keys(prefix).meta(run_id), "created_ts", f"{time.time() - 3 * 3600 - 60:.3f}")
    base = ["--redis-url", redis_url, "--prefix", prefix]
    text = invoke(*base, "status")
    assert f"live run: {run_id} (age 3h 1m)" in text.output
    doc = json.loads(invoke(*base, "status", "--json").output)
    assert 3 * 3600 + 60 <= doc["age_seconds"] < 3 * 3600 + 120


def test_format_age():
    assert [telemetry.format_age(s) for s in (9, 250, 3 * 3600 + 720, 2 * 86400 + 3 * 3600 + 5)] == [
        "9s", "4m 10s", "3h 12m", "2d 3h"]
