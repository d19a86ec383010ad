"""gunicorn settings for the lookup API: metrics summed over workers, a JSON access log.

    gunicorn -c python:lookup_api.gunicorn_conf -w 2 -b 127.0.0.1:8000 'lookup_api:create_app()'

Its settings (``PROMETHEUS_MULTIPROC_DIR``, ``RECSYS_ACCESS_LOG``) and the access log's fields are
listed in docs/observability.md; command-line flags still override them.  The metrics directory's
``*.db`` files are deleted when gunicorn starts, and a dead worker's live gauges are dropped
(``child_exit``).  A master started by another one (``kill -USR2``, a binary upgrade) never cleans
or removes the old master's live directory: it takes a default directory of its own
(``RECSYS_METRICS_DIR_OWNER`` tells them apart).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from gunicorn.config import AccessLogFormat
from gunicorn.glogging import Logger

_OWNER = "RECSYS_METRICS_DIR_OWNER"
_master = [os.getpid()]  # this module is imported by the gunicorn master (on_starting updates it after -D)
_DEFAULT_DIR = os.path.join(tempfile.gettempdir(), f"recsys-metrics-{_master[0]}")
_inherited = os.environ.get(_OWNER) == str(os.getppid())  # started by an older master (USR2)
if _inherited and os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").startswith(
        os.path.join(tempfile.gettempdir(), "recsys-metrics-")):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _DEFAULT_DIR  # the old master's default: not ours
# set before any worker imports prometheus_client: its storage mode is chosen at import time
multiproc_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", _DEFAULT_DIR)
os.environ[_OWNER] = str(_master[0])

accesslog = os.environ.get("RECSYS_ACCESS_LOG", "-") or None


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


def on_starting(server) -> None:
    """Create the metrics directory and delete the files a previous gunicorn left there."""
    _master[0] = os.getpid()  # after --daemon's fork
    path = Path(multiproc_dir)
    path.mkdir(parents=True, exist_ok=True)
    if _inherited:  # a user-set directory an older master is still writing to: keep its files
        return
    for stale in path.glob("*.db"):  # only prometheus_client's own files, whatever the directory
        stale.unlink()


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, multiproc_dir)


def on_exit(server) -> None:
    """Remove the default metrics directory (one set by the user is left in place)."""
    if multiproc_dir == _DEFAULT_DIR and os.getpid() == _master[0]:  # never from a forked worker
        shutil.rmtree(multiproc_dir, ignore_errors=True)


atexit.register(on_exit, None)  # also after `gunicorn --check-config`, which runs no server hooks
