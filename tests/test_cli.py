"""The CLI end to end on small generated data against real Redis (exit codes included)."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from batch.cli import cli
from batch.store import RunStore
from lookup_api.contract.keys import Keys

COMMANDS = ["run", "download", "status", "show", "rollback", "train", "score", "publish", "evaluate", "tune"]


def invoke(*args, env=None):
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result


@pytest.fixture
def base(redis_url, prefix, small_dir):
    return ["--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(small_dir)]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_for_every_command(command):
    result = invoke(*([command] if command else []), "--help")
    assert result.exit_code == 0
    assert "Example" in result.output


def test_every_command_is_registered_and_documented_in_the_readme():
    from pathlib import Path

    assert set(cli.commands) == set(COMMANDS)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for command in COMMANDS:
        assert f"`{command}" in readme, command


def test_run_status_show_rollback(base, client, prefix):
    small = ["--top-n", "10", "--candidates", "20", "--content-candidates", "5"]
    first = invoke(*base, "run", *small)
    assert first.exit_code == 0, first.output
    run1 = re.search(r"run (\S+) published: 300 users", first.output).group(1)
    store = RunStore(client, Keys(prefix))
    assert store.current() == run1
    assert len(list(client.scan_iter(match=f"{prefix}:run:{run1}:user:*"))) == 300

    second = invoke(*base, "run", *small)
    run2 = re.search(r"run (\S+) published", second.output).group(1)
    assert store.current() == run2 != run1

    status = invoke(*base, "status", "--json")
    doc = json.loads(status.output)
    assert doc["current"] == run2 and [r["run_id"] for r in doc["runs"]] == [run2, run1]
    assert json.loads(doc["meta"]["params"])["top_n"] == 10

    shown = invoke(*base, "show", "7", "-n", "3")
    assert f"personalized list from run {run2}" in shown.output
    assert len(re.findall(r"^\s+\d\. ", shown.output, re.M)) == 3
    unknown = invoke(*base, "show", "999999")
    assert "popular list" in unknown.output

    back = invoke(*base, "rollback")
    assert back.exit_code == 0 and store.current() == run1
    refused = invoke(*base, "rollback", "20200101T000000Z-dead")
    assert refused.exit_code == 1 and "unknown or was deleted" in refused.output


def test_dry_run_writes_nothing(base, client, prefix):
    result = invoke(*base, "run", "--dry-run", "--top-n", "5")
    assert result.exit_code == 0 and "dry run" in result.output
    assert list(client.scan_iter(match=f"{prefix}:*")) == []


def test_corrupt_file_exits_1_and_keeps_live_run(base, client, prefix, small_dir):
    assert invoke(*base, "run", "--top-n", "5").exit_code == 0
    live = RunStore(client, Keys(prefix)).current()
    with (small_dir / "ratings.dat").open("ab") as fh:
        fh.write(b"1::2::9::978300000\n")
    result = invoke(*base, "run", "--top-n", "5")
    assert result.exit_code == 1
    assert re.search(r"ratings\.dat:\d+: rating 9 is outside 1\.\.5", result.output)
    assert RunStore(client, Keys(prefix)).current() == live


def test_usage_errors_exit_2(base):
    assert invoke(*base, "run", "--top-n", "0").exit_code == 2
    assert invoke(*base, "show", "abc").exit_code == 2
    assert invoke(*base, "frobnicate").exit_code == 2


def test_unreachable_redis_is_one_line_exit_1(small_dir):
    url = "redis://:hunter2@127.0.0.1:1/0"
    result = invoke("--redis-url", url, "--data-dir", str(small_dir), "status")
    assert result.exit_code == 1
    assert "unavailable" in result.output and "hunter2" not in result.output


def test_second_concurrent_run_is_refused(base, client, prefix):
    client.set(Keys(prefix).lock, "someone-else", ex=60)
    result = invoke(*base, "run", "--top-n", "5")
    assert result.exit_code == 1 and "holds the lock" in result.output
    assert RunStore(client, Keys(prefix)).current() is None


def test_embedded_redis_persists_across_processes(small_dir, tmp_path):
    """No REDIS_URL: an embedded server under RECSYS_EMBEDDED_DIR; later processes (CLI, API) see the run.

    The dataset directory is read-only, as ../shared/data is: nothing may be written next to it.
    """
    import os
    import stat
    import subprocess
    import sys

    data = tmp_path / "readonly-data"
    data.mkdir()
    for name in ("ratings.dat", "movies.dat"):
        (data / name).write_bytes((small_dir / name).read_bytes())
    data.chmod(stat.S_IRUSR | stat.S_IXUSR)
    embedded = tmp_path / "state" / "redis"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"RECSYS_EMBEDDED_DIR": str(embedded)}
    cmd = [sys.executable, "-c", "from batch.cli import main; main()", "--data-dir", str(data)]
    ran = subprocess.run([*cmd, "run", "--top-n", "5"], env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "redis-cli -s" in ran.stdout and "shutdown failed" not in ran.stderr
    assert (embedded / "recsys.rdb").exists()  # saved when the job's server shut down
    assert sorted(p.name for p in data.iterdir()) == ["movies.dat", "ratings.dat"]
    status = subprocess.run([*cmd, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    run_id = re.search(r"run (\S+) published", ran.stdout).group(1)
    assert f"live run: {run_id}" in status.stdout
    api = ("from lookup_api import create_app; c = create_app().test_client(); "
           "print(c.get('/recommendations/1').get_json()['run_id'])")
    served = subprocess.run([sys.executable, "-c", api], env=env, capture_output=True, text=True, timeout=60)
    assert served.stdout.strip() == run_id, served.stderr


def test_bad_params_file_is_a_clean_error(base, tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text('{"params": {"als_factorz": 3}}')
    result = invoke(*base, "run", "--params", str(bad))
    assert result.exit_code == 1 and "unknown parameter(s): als_factorz" in result.output
