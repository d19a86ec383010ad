"""Open a Redis connection: the server named by a URL, or an embedded one under ``data/``.

Shared by the batch job and the API.  With a URL (``redis://``, ``rediss://``,
``unix://``) this is a plain redis-py client; ``redis+cluster://`` / ``rediss+cluster://``
(any one node of the cluster) gives redis-py's Redis Cluster client.  Without one, the client
points at the one embedded redis-server of ``RECSYS_EMBEDDED_DIR`` (default the checkout's
``data/redis`` from any directory in it, else ``./data/redis``: :mod:`lookup_api.paths`; independent
of where the dataset is read from), started by whichever process needs it first
and shared by all (:mod:`lookup_api.embedded_redis`).
"""

from __future__ import annotations

import errno
import logging
import re
import socket
from pathlib import Path

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from lookup_api import embedded_redis as embedded

log = logging.getLogger(__name__)

_QUERY_SECRET_RE = re.compile(r"(?i)(?<=[?&])(password|ssl_password|token)=[^&#]*")
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)

# What "the store is unreachable" looks like, on a single server or a cluster (redis-py's
# cluster exceptions do not all derive from RedisError).
UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,
)


def text(value: bytes | str | None) -> str | None:
    """Return a Redis reply as ``str`` (clients here answer bytes; None stays None)."""
    return value.decode() if isinstance(value, bytes) else value


def redact_url(url: str | None) -> str:
    """Return ``url`` with any password (user-info or ``?password=``) replaced by ``***``.

    The user-info ends at the *last* ``@`` before the query, so a password holding a raw ``@``
    (or ``/``) is hidden whole.
    """
    if not url:
        return "(embedded)"
    scheme, found, rest = url.partition("://")
    address, mark, query = rest.partition("?")
    if found and "@" in address:
        userinfo, _, host = address.rpartition("@")
        if ":" in userinfo:
            address = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return _QUERY_SECRET_RE.sub(lambda m: f"{m.group(1)}=***", f"{scheme}{found}{address}{mark}{query}")


def check_url(url: str) -> str:
    """Return ``url`` if its scheme is one Redis understands, else raise ValueError (one line)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValueError(f"{redact_url(url)} is not a Redis URL; use one of "
                         + ", ".join(f"{s}://" for s in SCHEMES))
    return url


def explain(exc: BaseException) -> str:
    """Return what a failed connection attempt ran into: refused, unknown host, timeout, authentication."""
    cause, message = exc.__cause__ or exc.__context__, str(exc)
    if isinstance(exc, redis.AuthenticationError | redis.AuthenticationWrongNumberOfArgsError) \
            or "NOAUTH" in message or "WRONGPASS" in message:
        return "authentication failed (the server rejected the credentials)"
    if isinstance(exc, redis.TimeoutError):
        return "timed out"
    if isinstance(cause, socket.gaierror) or "Name or service not known" in message \
            or "nodename nor servname" in message or "Temporary failure in name resolution" in message:
        return "unknown host"
    if isinstance(cause, ConnectionRefusedError) or "Connection refused" in message \
            or f"Error {errno.ECONNREFUSED} " in message:
        return "connection refused"
    if isinstance(cause, FileNotFoundError) or "No such file or directory" in message:
        return "no such socket"
    return f"{type(exc).__name__}: {message.splitlines()[0] if message else 'no detail'}"


def connect(
    url: str | None,
    *,
    embedded_dir: Path | str | None = None,
    socket_timeout: float | None = 5.0,
    connect_timeout: float | None = 2.0,
    retries: int = 3,
    retry_timeouts: bool = True,
    create: bool = True,
) -> redis.Redis:
    """Return a Redis client for ``url``, or for the embedded server when ``url`` is empty.

    ``retries`` bounds redis-py's reconnect attempts (its default, 10 with exponential
    backoff, could hold a request for many seconds while Redis is down); the API uses 1.
    ``retry_timeouts=False``: a timed-out command is not retried (on the API's hot path a hung
    server then costs one timeout, not two); a broken connection still is.
    ``create=False``: do not create a missing embedded directory (raise EmbeddedError).
    """
    errors = (redis.ConnectionError, redis.TimeoutError, socket.timeout) if retry_timeouts else \
        (redis.ConnectionError,)
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05) if retries > 1 else NoBackoff(), retries, errors)
    options = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout, "retry": retry}
    scheme = url.split("://", 1)[0] if url and "://" in url else ""
    if scheme in CLUSTER_SCHEMES:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(CLUSTER_SCHEMES[scheme] + url[len(scheme):], **options)
    if url:
        return redis.Redis.from_url(check_url(url), **options)
    path = embedded.ensure(embedded_dir, create=create)
    log.debug("using the embedded redis-server on %s", path)
    return redis.Redis(unix_socket_path=str(path), **options)

