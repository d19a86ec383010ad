"""One line saying where a process reads and writes: ``data: /abs/path · redis: <where>``.

Logged at start-up by ``recsys-api`` and by the CLI, so that a server started in the wrong
directory, or on the wrong Redis, says so.  The password of a Redis URL is redacted.
"""

from __future__ import annotations

from pathlib import Path

from lookup_api import paths
from lookup_api.contract.connection import redact_url
from lookup_api.embedded_redis import Embedded


def describe(data: Path | str | None = None, redis_url: str | None = None,
             embedded: Path | str | None = None) -> str:
    """Return ``data: /abs/path · redis: <url, password redacted | embedded, unix socket /abs/sock>``.

    ``data`` / ``embedded``: a directory given by the caller (else the rule of :mod:`lookup_api.paths`).
    """
    if redis_url:
        redis = redact_url(redis_url)
    else:
        redis = f"embedded, unix socket {Embedded(paths.embedded_dir(embedded)).socket}"
    return f"data: {paths.data_dir(data)} · redis: {redis}"
