"""The CLI's errors, messages and stderr: one line per error and per fact, one wording per rule (issue 22)."""

from __future__ import annotations

import re
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from batch.cli import cli
from batch.cli.common import Group
from lookup_api.contract.errors import RecsysError

CLI = [sys.executable, "-c", "from batch.cli import main; main()"]
SMALL = ["--top-n", "20", "--candidates", "30", "--content-candidates", "10", "--als-factors", "8",
         "--svd-factors", "8"]


def stderr_of(*args: str) -> tuple[int, str, str]:
    """Run the real console entry point (real logging setup); return exit status, stdout, stderr."""
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, re.sub(r"(?m)^\d{4}-\d\d-\d\d [\d:,]+ ", "", done.stderr)


def test_every_library_error_the_cli_reports_is_a_recsys_error():
    from batch.artifacts import ArtifactsError
    from batch.download import DownloadError
    from batch.evaluation.split import EvaluationError
    from batch.formats import DataError
    from batch.lifecycle import GateError
    from batch.params import ParamError
    from batch.store import FullError, LockedError, LostLockError, StoreError
    from lookup_api.embedded_redis import EmbeddedError

    for error in (ArtifactsError, DownloadError, EvaluationError, DataError, GateError, ParamError,
                  StoreError, LockedError, LostLockError, FullError, EmbeddedError):
        assert issubclass(error, RecsysError), error


def test_any_recsys_error_is_one_line_exit_1_without_a_registry():
    """A subclass nobody registered (a renamed class) is still one line, not a traceback."""

    class RenamedError(RecsysError):
        pass

    @click.group(cls=Group)
    def group():
        pass

    @group.command()
    def boom():
        raise RenamedError("the message")

    result = CliRunner().invoke(group, ["boom"])
    assert result.exit_code == 1 and result.stderr == "Error: the message\n" and result.stdout == ""


def test_a_failed_run_prints_its_error_once(tmp_path):
    status, out, err = stderr_of("run", "--data-dir", str(tmp_path / "nope"))
    assert status == 1 and out == ""
    assert err == (f"Error: {tmp_path}/nope holds no ratings.dat (nor {tmp_path}/nope/ml-1m/ratings.dat): "
                   "check the path, or pass --download to fetch ml-1m into it\n")


def test_one_log_line_per_fact(redis_url, prefix, small_dir):
    shared = ["--redis-url", redis_url, "--prefix", prefix]
    status, out, err = stderr_of("run", *shared, "--data-dir", str(small_dir), *SMALL)
    assert status == 0, err
    run_id = re.search(r"run (\S+) published", out).group(1)
    assert out.count("redis: ") == 1 and "redis: " not in err  # printed once, by run itself
    timings = [line for line in err.splitlines() if "load " in line and "total " in line]
    assert timings == [line for line in err.splitlines() if "stages: " in line] and len(timings) == 1
    assert timings[0].startswith(f"INFO batch.telemetry: run {run_id} stages: load ")
    assert "stage timings" not in err and "ERROR" not in err
    for command in (["status"], ["show", "42", "-n", "3"]):  # read-only: stdout says it all
        status, out, err = stderr_of(*command, *shared)
        assert status == 0 and err == "" and run_id in out, (command, err)


def test_show_words_the_n_rule_once_like_the_api(redis_url, prefix, publish_small):
    from lookup_api import create_app

    publish_small()
    api = create_app({"REDIS_URL": redis_url, "PREFIX": prefix}).test_client()
    for n in ("0", "51", "x", "-3"):
        status, out, err = stderr_of("show", "42", "-n", n, "--redis-url", redis_url, "--prefix", prefix)
        assert status == 2 and out == ""
        served = api.get(f"/recommendations/42?n={n}").get_json()["error"]
        assert served == f"n must be an integer from 1 to 20, got {n!r}"
        assert err.splitlines()[-1] == f"Error: Invalid value for '-n': {served}"  # the very same words


def test_help_shows_the_default_a_run_would_use(tmp_path, monkeypatch):
    import batch.params

    def default_of(option: str) -> str:
        text = " ".join(CliRunner().invoke(cli, ["run", "--help"]).output.split())
        return re.search(rf"{option} .*?\[default: ([^;\]]+)", text).group(1)

    tuned = batch.params.tuned_document()["params"]
    assert default_of("--als-factors") == f"{tuned['als_factors']} (tuned_params.json)"
    fake = tmp_path / "tuned_params.json"
    fake.write_text('{"params": {"als_factors": 77}}')
    monkeypatch.setattr(batch.params, "TUNED_PATH", fake)  # read at help time, not at import
    assert default_of("--als-factors") == "77 (tuned_params.json)"
    assert default_of("--svd-factors") == "50"  # not in the file: the built-in default
    assert batch.params.load_params().als_factors == 77 and batch.params.load_params().svd_factors == 50


@pytest.mark.parametrize("command, absent", [
    ("download", ["--redis-url", "--prefix"]), ("evaluate", ["--redis-url"]), ("tune", ["--redis-url"]),
    ("status", ["--data-dir", "--dataset"]), ("show", ["--data-dir"]), ("rollback", ["--data-dir"]),
    ("unlock", ["--data-dir"]), ("score", ["--data-dir"]), ("publish", ["--data-dir"]),
])
def test_each_command_lists_only_the_options_it_uses(command, absent):
    text = CliRunner().invoke(cli, [command, "--help"]).output
    assert "--log-format" in text
    for option in absent:
        assert option not in text, (command, option)
    refused = CliRunner().invoke(cli, [command, absent[0], "x"] + (["1"] if command == "show" else []))
    assert refused.exit_code == 2 and f"No such option '{absent[0]}'" in refused.output


def test_shared_options_before_the_command_still_work(redis_url, prefix, tmp_path):
    """`recsys-batch --data-dir DIR status`: accepted (old scripts), ignored where it means nothing."""
    before = ["--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(tmp_path), "-vq"]
    result = CliRunner().invoke(cli, [*before, "status"])
    assert result.exit_code == 0 and "no live run" in result.output
    typo = CliRunner().invoke(cli, ["--redis-url=redis://127.0.0.1:1/0", "status"])
    assert typo.exit_code == 1 and "cannot reach Redis at redis://127.0.0.1:1/0" in typo.stderr
    dead = {"REDIS_URL": "redis://127.0.0.1:1/0"}
    typed_before = CliRunner().invoke(cli, [*before, "status"], env=dead)  # typed beats the environment
    assert typed_before.exit_code == 0 and "no live run" in typed_before.output
    after_wins = CliRunner().invoke(cli, [*before, "status", "--redis-url", dead["REDIS_URL"]])
    assert after_wins.exit_code == 1 and "cannot reach Redis at redis://127.0.0.1:1/0" in after_wins.stderr
    assert "--redis-url TEXT" not in CliRunner().invoke(cli, ["--help"]).output  # each command lists its own


@pytest.mark.parametrize("command", [["status"], ["show", "1"], ["rollback"], ["unlock"], ["hidden"],
                                     ["hide", "1"], ["unhide", "1"]])
def test_a_redis_error_in_any_redis_command_is_one_line(command, redis_url, prefix, client):
    """Applied once, to every command of the REDIS set: a reply Redis refuses is one `Error:` line."""
    client.rpush(f"{prefix}:current", "not-a-string")
    client.rpush(f"{prefix}:hidden", "not-a-hash")
    client.rpush(f"{prefix}:lock:{{{prefix}:current}}", "not-a-string")
    status, out, err = stderr_of(*command, "--redis-url", redis_url, "--prefix", prefix)
    errors = [line for line in err.splitlines() if not line.startswith("INFO batch: data: ")]  # writers
    assert status == 1 and len(errors) == 1 and errors[0].startswith("Error: Redis error: ")
    assert "WRONGTYPE" in errors[0] and out == ""


def test_show_says_when_the_live_run_is_gone(redis_url, prefix, publish_small, client):
    run_id = publish_small()
    for key in client.scan_iter(match=f"{prefix}:run:*"):
        client.delete(key)
    status, out, err = stderr_of("show", "42", "--redis-url", redis_url, "--prefix", prefix)
    assert (status, out) == (1, "")
    assert err.splitlines() == [f"Error: the live run {run_id} has no keys (deleted?); "
                                "see `recsys-batch status`"]


@pytest.mark.parametrize("shard, index, said", [
    ("3/3", None, "shard index 3 must be in 0..2"), ("index/2", "5", "shard index 5 must be in 0..1"),
    ("index/2", None, "shard must look like I/N, e.g. 0/3, got '/2'")])
def test_a_bad_shard_is_a_usage_error(shard, index, said, tmp_path, monkeypatch):
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    env = {"JOB_COMPLETION_INDEX": index} if index else {}
    result = CliRunner().invoke(cli, ["score", "--artifacts", str(tmp_path), "--shard", shard], env=env)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == f"Error: Invalid value for '--shard': {said}"
