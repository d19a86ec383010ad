"""gunicorn settings for the lookup API: metrics summed over workers, a JSON access log, slow clients bounded.

    recsys-api -w 2 -b 127.0.0.1:8000
    # is: gunicorn -c python:lookup_api.gunicorn_conf -w 2 -b 127.0.0.1:8000 'lookup_api:create_app()'

Its settings (``PORT``, ``WEB_CONCURRENCY``, ``GUNICORN_THREADS``, ``GUNICORN_TIMEOUT``,
``GUNICORN_GRACEFUL_TIMEOUT``, ``GUNICORN_KEEPALIVE``, ``GUNICORN_REUSE_PORT``, ``GUNICORN_CONTROL_SOCKET``,
``RECSYS_HEADER_TIMEOUT``, ``PROMETHEUS_MULTIPROC_DIR``, ``RECSYS_ACCESS_LOG``) and the access
log's fields are listed in docs/deploy.md and docs/observability.md; command-line flags still
override them.  Workers are :class:`lookup_api.server.Worker` (gunicorn's threaded worker with a
bounded header read time).

Without ``PROMETHEUS_MULTIPROC_DIR`` the metrics directory is a fresh ``mkdtemp`` (mode 0700,
removed on exit); a directory given by the user must be ours, mode 0700 and not a symlink (it is
created so when missing), else gunicorn refuses to start.  Its ``*.db`` files are deleted when
gunicorn starts, and a dead worker's live gauges are dropped (``child_exit``).  A master started
by another one (``kill -USR2``, a binary upgrade) never cleans or removes the old master's live
directory: it takes a fresh directory of its own (``RECSYS_METRICS_DIR_OWNER`` tells them apart).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import tempfile
from datetime import UTC, datetime

from gunicorn.config import AccessLogFormat
from gunicorn.glogging import Logger

from lookup_api import paths, where

_OWNER = "RECSYS_METRICS_DIR_OWNER"  # pid of the master whose directory PROMETHEUS_MULTIPROC_DIR is
_FRESH = "RECSYS_METRICS_DIR_FRESH"  # that directory came from mkdtemp (the master removes it on exit)
_master = [os.getpid()]  # this module is imported by the gunicorn master (on_starting updates it after -D)
_inherited = os.environ.get(_OWNER) == str(os.getppid())  # started by an older master (USR2)
_given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
_fresh = not _given or (_inherited and os.environ.get(_FRESH) == _given)  # none, or the old master's
if _fresh:
    # set before any worker imports prometheus_client: its storage mode is chosen at import time
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[_FRESH] = tempfile.mkdtemp(prefix="recsys-metrics-")
    _inherited = False
else:
    os.environ.pop(_FRESH, None)
    try:  # ours, 0700, no symlink: else refuse to start (another user could inject metric files)
        paths.private_dir(_given, "PROMETHEUS_MULTIPROC_DIR")
    except OSError as exc:
        raise SystemExit(f"recsys-api: {exc}") from None
multiproc_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
os.environ[_OWNER] = str(_master[0])

# Serving: threads (an idle or slow connection holds no worker), a bounded header read.
_port = os.environ.get("PORT")
bind = [f"0.0.0.0:{_port}" if _port else "127.0.0.1:8000"]
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
worker_class = "lookup_api.server.Worker"
threads = int(os.environ.get("GUNICORN_THREADS") or 4)
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or 30)
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT") or 20)
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE") or 5)
if os.environ.get("GUNICORN_CONTROL_SOCKET"):
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]
accesslog = os.environ.get("RECSYS_ACCESS_LOG", "-") or None
# One listening socket per worker (SO_REUSEPORT): the kernel spreads new connections over the
# workers.  On one shared socket, the worker woken first accepts nearly every connection, and
# kept-alive clients (a load balancer's pool, wrk) then load one worker, i.e. one core, while the
# others idle.  Off for unix-socket binds (on_starting) and with GUNICORN_REUSE_PORT=false.
reuse_port = os.environ.get("GUNICORN_REUSE_PORT", "true").strip().lower() not in ("0", "false", "no", "off")


class JsonAccessLogger(Logger):
    """gunicorn's logger with one JSON object per access-log line (unless --access-logformat is given)."""

    def access(self, resp, req, environ, request_time) -> None:
        """Log one request as JSON (an explicit ``--access-logformat`` is honoured instead)."""
        if self.cfg.access_log_format != AccessLogFormat.default:
            return super().access(resp, req, environ, request_time)
        if not (self.cfg.accesslog or self.cfg.logconfig_dict):
            return None
        status = resp.status
        status = int(status.split(None, 1)[0]) if isinstance(status, str) else status
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "remote": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING"),
            "status": status,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "pid": os.getpid(),
        }
        self.access_log.info("%s", json.dumps(record, separators=(",", ":")))
        return None


logger_class = JsonAccessLogger


def _check_binds(server) -> str:
    """Return how the workers listen.  With per-worker sockets, refuse a TCP address in use
    (SO_REUSEPORT would share it silently with another server of this user); use one shared
    socket for unix-socket and fd binds."""
    addresses = server.cfg.address
    if server.cfg.reuse_port and any(not isinstance(a, tuple) for a in addresses):
        server.cfg.set("reuse_port", False)
    shown = ", ".join(f"{a[0]}:{a[1]}" if isinstance(a, tuple) else str(a) for a in addresses)
    if not server.cfg.reuse_port:
        return f"{shown} (one socket shared by the workers)"
    for host, port in () if _inherited else addresses:  # USR2: the old master's workers hold it on purpose
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise SystemExit(f"recsys-api: cannot listen on {host}:{port}: {exc.strerror}") from None
    return f"{shown} (a socket per worker)"


def on_starting(server) -> None:
    """Say where the API reads from; delete the metric files a previous gunicorn left in its directory."""
    _master[0] = os.getpid()  # after --daemon's fork
    if server is not None:
        listening = _check_binds(server)
        redis_url = os.environ.get("REDIS_URL") or os.environ.get("RECSYS_REDIS_URL")
        server.log.info("recsys-api: %s · listening on %s · metrics: %s", where.describe(redis_url=redis_url),
                        listening, multiproc_dir)
    path = paths.private_dir(multiproc_dir, "PROMETHEUS_MULTIPROC_DIR")
    if _inherited:  # a user-set directory an older master is still writing to: keep its files
        return
    for stale in path.glob("*.db"):  # only prometheus_client's own files, whatever the directory
        stale.unlink()


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, multiproc_dir)


def on_exit(server) -> None:
    """Remove the fresh metrics directory (one set by the user is left in place)."""
    if _fresh and os.getpid() == _master[0]:  # never from a forked worker
        shutil.rmtree(multiproc_dir, ignore_errors=True)


atexit.register(on_exit, None)  # also after `gunicorn --check-config`, which runs no server hooks
