"""The CLI end to end on small generated data against real Redis (exit codes included)."""

from __future__ import annotations

import json
import re

import click
import pytest
from click.testing import CliRunner

from batch.cli import cli
from batch.store import RunStore
from lookup_api.contract.keys import Keys

COMMANDS = ["run", "download", "status", "show", "rollback", "unlock", "train", "score", "publish",
            "evaluate", "tune", "embedded", "hide", "unhide", "hidden"]


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
    assert doc["meta"]["params"]["top_n"] == 10 and doc["meta"]["top_n"] == 10

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
    assert "cannot reach Redis" in result.output and "hunter2" not in result.output


def test_second_concurrent_run_is_refused(base, client, prefix):
    client.set(Keys(prefix).lock, "someone-else", ex=60)
    result = invoke(*base, "run", "--top-n", "5")
    assert result.exit_code == 1 and "holds the lock" in result.output
    assert RunStore(client, Keys(prefix)).current() is None


def test_bad_params_file_is_a_clean_error(base, tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text('{"params": {"als_factorz": 3}}')
    result = invoke(*base, "run", "--params", str(bad))
    assert result.exit_code == 1 and "unknown parameter(s): als_factorz" in result.output


def one_line_error(result) -> str:
    """The error a failed command printed: exactly one 'Error: ...' line, no traceback."""
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def test_shared_options_work_after_the_command(redis_url, prefix, small_dir, client):
    result = invoke("run", "--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(small_dir),
                    "--top-n", "5", "-q")
    assert result.exit_code == 0, result.output
    run_id = re.search(r"run (\S+) published", result.output).group(1)
    assert RunStore(client, Keys(prefix)).current() == run_id
    status = invoke("--prefix", "overridden", "status", "--prefix", prefix, "--redis-url", redis_url)
    assert f"live run: {run_id}" in status.output


@pytest.mark.parametrize("where", ["before", "after"])
def test_mistyped_data_dir_is_refused_and_not_created(redis_url, prefix, tmp_path, where):
    typo = tmp_path / "ml-1n"
    shared = ["--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(typo)]
    args = [*shared, "run"] if where == "before" else ["run", *shared]
    result = invoke(*args)
    assert result.exit_code == 1
    assert f"{typo} holds no ratings.dat" in one_line_error(result) and "--download" in result.output
    assert not typo.exists()
    for command in (["evaluate"], ["tune", "--quick"]):
        other = invoke("--data-dir", str(typo), *command)
        assert other.exit_code == 1 and "holds no ratings.dat" in other.output and not typo.exists()


def test_download_into_a_given_data_dir_only_when_asked(redis_url, prefix, tmp_path):
    """--download (or RECSYS_DATA_DIR, a deployment's setting) attempts the download: here a dead mirror."""
    target, mirror = tmp_path / "fresh", "http://127.0.0.1:1/ml-1m.zip"
    asked = invoke("--redis-url", redis_url, "--prefix", prefix, "run", "--data-dir", str(target),
                   "--download", "--dataset-url", mirror)
    assert asked.exit_code == 1 and "download of http://127.0.0.1:1/ml-1m.zip failed" in one_line_error(asked)
    by_env = invoke("--redis-url", redis_url, "--prefix", prefix, "run", "--dataset-url", mirror,
                    env={"RECSYS_DATA_DIR": str(target)})
    assert by_env.exit_code == 1 and "download of" in one_line_error(by_env)


def test_redis_url_with_a_wrong_scheme_is_a_usage_error(small_dir):
    result = invoke("--redis-url", "http://localhost:6379", "status")
    assert result.exit_code == 2
    assert "http://localhost:6379 is not a Redis URL; use one of redis://" in one_line_error(result)
    after = invoke("status", "--redis-url", "http://localhost:6379")
    assert after.exit_code == 2 and "is not a Redis URL" in after.output


def test_unreachable_redis_says_what_failed(tmp_path):
    import socket

    from tests.conftest import RedisProcess

    refused = invoke("--redis-url", "redis://127.0.0.1:1/0", "status")
    assert refused.exit_code == 1 and one_line_error(refused).endswith("connection refused")
    unknown = invoke("--redis-url", "redis://no-such-host.invalid:6379/0", "status")
    assert unknown.exit_code == 1 and one_line_error(unknown).endswith("unknown host")
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        mute = invoke("--redis-url", f"redis://127.0.0.1:{silent.getsockname()[1]}/0", "status")
    assert mute.exit_code == 1 and one_line_error(mute).endswith("timed out")
    server = RedisProcess(tmp_path, password="right")
    server.start()
    try:
        wrong = invoke("--redis-url", f"redis://:wrong@127.0.0.1:{server.port}/0", "status")
        missing = invoke("--redis-url", f"redis://127.0.0.1:{server.port}/0", "status")
    finally:
        server.stop()
    assert wrong.exit_code == 1 and "authentication failed" in one_line_error(wrong)
    assert "wrong" not in one_line_error(wrong).split("failed")[0]  # the password is never printed
    assert missing.exit_code == 1 and "authentication failed" in one_line_error(missing)


def test_show_refuses_n_above_the_list_length_like_the_api(base, redis_url, prefix):
    from lookup_api import create_app

    assert invoke(*base, "run", "--top-n", "20").exit_code == 0
    api = create_app({"REDIS_URL": redis_url, "PREFIX": prefix}).test_client()
    for n in (20, 21):
        shown = invoke(*base, "show", "7", "-n", str(n))
        served = api.get(f"/recommendations/7?n={n}")
        if n == 20:
            assert shown.exit_code == 0 and served.status_code == 200
            assert len(re.findall(r"^\s*\d+\. ", shown.output, re.M)) == len(served.get_json()["items"]) == 20
        else:
            assert shown.exit_code == 2 and served.status_code == 400
            assert "n must be an integer from 1 to 20" in one_line_error(shown)
            assert served.get_json()["error"].startswith("n must be an integer from 1 to 20")


def test_show_with_redis_down_is_one_line(small_dir):
    result = invoke("--redis-url", "redis://127.0.0.1:1/0", "show", "1")
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "cannot reach Redis" in line and "has no keys" not in line


def test_status_shows_publish_and_total_time(base):
    assert invoke(*base, "run", "--top-n", "5").exit_code == 0
    status = invoke(*base, "status")
    timings = re.search(r"^  timings: (.*)$", status.output, re.M).group(1)
    assert re.search(r"load [\d.]+s, .*publish [\d.]+s, total [\d.]+s$", timings), timings


def test_dry_run_prints_no_run_id(base):
    result = invoke(*base, "run", "--dry-run", "--top-n", "5")
    assert result.exit_code == 0 and "nothing written to Redis" in result.output
    assert not re.search(r"\d{8}T\d{6}Z", result.output)


def test_help_is_complete_generic_and_uncut():
    def commands(group, path=()):
        for name, command in group.commands.items():
            yield (*path, name), command
            if hasattr(command, "commands"):
                yield from commands(command, (*path, name))

    for path, command in commands(cli):
        undocumented = [p.name for p in command.params if isinstance(p, click.Option) and not p.help]
        assert not undocumented, (path, undocumented)
        text = invoke(*path, "--help").output
        assert "../shared" not in text and "/work/" not in text, path
    listing = invoke("--help").output.split("Commands:")[1]
    assert "..." not in listing
    for name, command in cli.commands.items():
        summary = " ".join(listing.split(f"  {name} ", 1)[1].split("\n  ")[0].split())
        assert summary.startswith(command.get_short_help_str(200)[:40]), name


def test_help_and_read_only_commands_import_no_model_library(publish_small, redis_url, prefix):
    """--help, status, show and rollback stay fast: no numpy, scipy, pandas, sklearn, implicit, surprise."""
    import subprocess
    import sys

    publish_small()
    publish_small()
    code = ("import sys\nfrom batch.cli import cli\ntry:\n    cli(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n    print('HEAVY', sorted(m for m in ('numpy', 'scipy', 'pandas', 'sklearn', "
            "'implicit', 'surprise') if m in sys.modules))")
    shared = ["--redis-url", redis_url, "--prefix", prefix]
    for args in (["--help"], ["run", "--help"], [*shared, "status"], [*shared, "show", "1", "-n", "3"],
                 [*shared, "show", "999999"], [*shared, "rollback"]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
        assert "HEAVY []" in done.stdout, (args, done.stdout[-300:], done.stderr[-500:])
