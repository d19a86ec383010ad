"""Another local user cannot hijack the runtime directories (issue 20 #7).

The embedded server's socket fallback directory (``$TMPDIR/recsys-redis-<uid>/``) and the API's
prometheus multiprocess directory are either created fresh or checked like ssh-agent's: ours,
mode 0700, not a symlink.  A directory prepared by someone else (0777, a symlink, another owner)
is refused with a clear one-line error.  The embedded data directory is 0700, its files 0600.
Real processes: redis-server, the ``recsys-batch`` CLI and ``recsys-api``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lookup_api import embedded_redis
from tests.deploy_helpers import RECSYS_API

NOBODY = 65534
CLI = [sys.executable, "-c", "from batch.cli import main; main()"]


def long_embedded_dir(base: Path) -> Path:
    """A directory whose ``redis.sock`` path is too long for a unix socket: the socket goes to $TMPDIR."""
    directory = base / ("d" * 60) / ("e" * 60)
    assert len(str(directory / "redis.sock")) > embedded_redis.MAX_SOCKET_PATH
    return directory


def prepared(kind: str, path: Path, elsewhere: Path) -> None:
    """Prepare ``path`` the way another local user could have: 0777, a symlink, or owned by nobody."""
    if kind == "mode-0777":
        path.mkdir()
        path.chmod(0o777)
    elif kind == "symlink":
        elsewhere.mkdir(mode=0o700)
        path.symlink_to(elsewhere)
    else:
        path.mkdir(mode=0o700)
        os.chown(path, NOBODY, NOBODY)


KINDS = ["mode-0777", "symlink", "foreign-owner"]
REASONS = {"mode-0777": "has mode 0777, not 0700", "symlink": "is a symlink",
           "foreign-owner": f"is owned by uid {NOBODY}"}


@pytest.fixture
def tmpdir_env(tmp_path, monkeypatch) -> Path:
    """A private $TMPDIR for this test (in-process through tempfile, and for subprocesses)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    return tmp


@pytest.mark.parametrize("kind", KINDS)
def test_a_prepared_socket_directory_is_refused(kind, tmp_path, tmpdir_env):
    directory = long_embedded_dir(tmp_path / "data")
    socket_dir = tmpdir_env / f"recsys-redis-{os.getuid()}"
    prepared(kind, socket_dir, tmp_path / "attacker")
    try:
        with pytest.raises(embedded_redis.EmbeddedError, match=REASONS[kind]):
            embedded_redis.ensure(directory)
    finally:  # before the fix a server started there: stop it
        pid = embedded_redis.Embedded(directory).pid() if directory.is_dir() else None
        if pid:
            os.kill(pid, 9)
    assert not any(socket_dir.iterdir()), "no socket may have been created in it"
    # the CLI says so in one line, exit 1
    out = subprocess.run([*CLI, "embedded", "start"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "RECSYS_EMBEDDED_DIR": str(directory)})
    assert out.returncode == 1, out.stderr
    assert "Error: refusing the embedded Redis socket directory" in out.stderr and REASONS[kind] in out.stderr
    assert "Traceback" not in out.stderr


def test_a_fresh_socket_directory_is_private_and_the_data_too(tmp_path, tmpdir_env):
    directory = long_embedded_dir(tmp_path / "data")
    try:
        socket = embedded_redis.ensure(directory)
        assert socket.parent == tmpdir_env / f"recsys-redis-{os.getuid()}"
        assert stat.S_IMODE(socket.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(socket.stat().st_mode) == 0o600
        assert_private(directory)
    finally:
        embedded_redis.stop(directory)


def assert_private(directory: Path) -> None:
    """The directory and everything in it: directories 0700, files 0600 (no group or other bits)."""
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    found = []
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o700, name
        for name in files:
            mode = stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
            assert mode == 0o600, f"{name} is {mode:04o}"
            found.append(name)
    assert {"redis.conf", "redis.pid", "server.lock"} <= set(found), found
    assert any(name.startswith("appendonly") for name in found), found


def test_an_old_readable_data_directory_is_tightened(tmp_path):
    directory = tmp_path / "redis"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    (directory / "redis.log").write_text("from an earlier version\n")
    (directory / "redis.log").chmod(0o644)
    try:
        embedded_redis.ensure(directory)
        assert_private(directory)
    finally:
        embedded_redis.stop(directory)


@pytest.mark.parametrize("kind", KINDS)
def test_a_prepared_metrics_directory_is_refused_by_recsys_api(kind, tmp_path, redis_url):
    metrics = tmp_path / "metrics"
    prepared(kind, metrics, tmp_path / "attacker")
    (metrics / "counter_1.db").write_bytes(b"injected")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics), "REDIS_URL": redis_url}
    out = subprocess.run([str(RECSYS_API), "-b", "127.0.0.1:0"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode != 0
    assert f"recsys-api: refusing PROMETHEUS_MULTIPROC_DIR {metrics}: it {REASONS[kind]}" in out.stderr
    assert "Booting worker" not in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


def test_the_default_metrics_directory_is_fresh_and_private(tmp_path, tmpdir_env):
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR",)}
    pre = tmpdir_env / f"recsys-metrics-{os.getpid()}"  # a guessable name prepared in advance: unused
    pre.mkdir()
    pre.chmod(0o777)
    dirs = []
    for _ in range(2):
        code = ("import lookup_api.gunicorn_conf as c, os; "
                "print(c.multiproc_dir, oct(os.stat(c.multiproc_dir).st_mode & 0o777))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                             check=True)
        path, mode = out.stdout.split()
        assert Path(path).parent == tmpdir_env and mode == "0o700"
        dirs.append(path)
    assert len(set(dirs)) == 2 and str(pre) not in dirs
