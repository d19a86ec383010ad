"""`recsys-batch status --json` is typed JSON: numbers are numbers, params and timings are objects."""

from __future__ import annotations

import json

from click.testing import CliRunner

from batch.cli import cli


def test_status_json_values_are_typed(redis_url, prefix, publish_small):
    run_id = publish_small()
    result = CliRunner().invoke(cli, ["status", "--json", "--redis-url", redis_url, "--prefix", prefix])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    meta = doc["meta"]
    assert doc["current"] == run_id and isinstance(doc["age_seconds"], float)
    for key in ("n_users", "n_items", "n_ratings", "top_n", "users", "empty_lists", "popular_items"):
        assert type(meta[key]) is int, (key, meta[key])
    assert meta["n_users"] == meta["users"] == 300 and meta["top_n"] == 20
    assert type(meta["created_ts"]) is float and type(meta["last_success_ts"]) is float
    assert meta["success"] is True and meta["status"] == "complete"
    assert isinstance(meta["params"], dict) and meta["params"]["top_n"] == 20
    assert isinstance(meta["timings"], dict) and {"load", "publish", "total"} <= set(meta["timings"])
    assert all(type(v) is float for v in meta["timings"].values())
    assert isinstance(meta["peak_rss_mib"], dict)
    assert not any(isinstance(v, str) and v[:1] in "{[" for v in meta.values())  # no JSON inside strings
    assert doc["runs"] == [{"run_id": run_id, "created_ts": meta["created_ts"]}]
