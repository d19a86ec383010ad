"""``recsys-batch embedded start|status|stop``: the local redis-server used when REDIS_URL is unset."""

from __future__ import annotations

import json

import click

from batch.cli.common import JSON, Group
from lookup_api import embedded_redis  # light (where imports it too): no redis until a server is asked
from lookup_api.where import embedded_status, redis_cli


@click.group(cls=Group, short_help="Start, inspect or stop the embedded redis-server (no REDIS_URL).")
def embedded():
    """The embedded redis-server of $RECSYS_EMBEDDED_DIR (default: the checkout's data/redis, from any
    directory in it; outside a checkout ./data/redis).

    Without REDIS_URL, the first command that needs Redis (run, the API, status...) starts it;
    it keeps running for the others (one server per directory, on DIR/redis.sock) until
    `recsys-batch embedded stop`. Its data is in DIR/appendonly.aof.

    \b
    Example:
      recsys-batch embedded status
      recsys-batch embedded stop
    """


@embedded.command(short_help="Start the embedded server (if it is not running).")
def start():
    """Start the embedded server unless it runs already; print its socket.

    \b
    Example:
      RECSYS_EMBEDDED_DIR=/var/tmp/recsys recsys-batch embedded start
    """
    socket = embedded_redis.ensure()
    click.echo(f"embedded redis-server on {socket} (inspect: {redis_cli(socket)})")


@embedded.command(short_help="Show whether the embedded server runs, and where.")
@JSON
def status(as_json):
    """Show the embedded server's directory, socket, pid and data files.

    \b
    Example:
      recsys-batch embedded status
    """
    info = embedded_redis.Embedded(embedded_redis.embedded_dir()).info()
    click.echo(json.dumps(info, indent=2) if as_json else embedded_status(info))


@embedded.command(short_help="Stop the embedded server (its data stays on disk).")
def stop():
    """Stop the embedded server; the data stays in its directory for the next start.

    \b
    Example:
      recsys-batch embedded stop
    """
    pid = embedded_redis.stop()
    where = embedded_redis.embedded_dir()
    click.echo(f"stopped the embedded redis-server (pid {pid}) of {where}" if pid
               else f"no embedded redis-server was running for {where}")
