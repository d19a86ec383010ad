"""What the ``recsys-batch`` commands share: the option sets, the context, clean errors.

Each shared option is declared once, in :data:`REDIS`, :data:`DATA` or :data:`LOGS`, and
:func:`uses` adds a set to each command that uses it (``batch/cli/__init__.py`` says which).
Kept light (no numpy at import): ``--help`` and the read-only commands import the model
libraries only when they use them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import threading
from pathlib import Path

import click
from click.core import ParameterSource

from batch.download import RELEASES, require_dataset
from batch.store import RunStore, redis_errors
from lookup_api import paths
from lookup_api.contract.errors import RecsysError
from lookup_api.contract.keys import DEFAULT_PREFIX, Keys

log = logging.getLogger("batch")


def parsed(parse):
    """Return an option's callback: ``parse(value)``, whose ValueError is a usage error (exit 2)."""
    def callback(ctx, param, value):
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


def _check_url(value: str | None) -> str | None:
    from lookup_api.contract.connection import check_url

    return value and check_url(value)


# The shared option sets: (declarations, attributes) of each option, declared here only.
REDIS = (
    (("--redis-url",), dict(envvar="REDIS_URL", callback=parsed(_check_url),
                            help="Redis server URL (redis://, rediss://, unix://, redis+cluster://). "
                                 "Unset: the embedded server of $RECSYS_EMBEDDED_DIR (default: the "
                                 "checkout's data/redis, else ./data/redis). [env: REDIS_URL]")),
    (("--prefix",), dict(envvar="RECSYS_PREFIX", default=DEFAULT_PREFIX,
                         help="Key prefix in Redis. [env: RECSYS_PREFIX]")),
)
DATA = (
    (("--data-dir",), dict(envvar="RECSYS_DATA_DIR", show_default=False,
                           type=click.Path(file_okay=False, path_type=Path),
                           help="Directory with ratings.dat + movies.dat (or DIR/ml-1m/). Default: the "
                                "checkout's data/ from any directory in it, else ./data; downloaded into "
                                "when missing. A --data-dir typed here must hold the files. "
                                "[env: RECSYS_DATA_DIR]")),
    (("--dataset",), dict(envvar="RECSYS_DATASET", default="ml-1m", type=click.Choice(list(RELEASES)),
                          help="MovieLens release to download/read (.dat for 1m/10m, CSV for 20m/25m/"
                               "latest-small). [env: RECSYS_DATASET]")),
)
LOGS = (
    (("-v", "--verbose"), dict(count=True, show_default=False, help="More logging (-vv for debug).")),
    (("-q", "--quiet"), dict(is_flag=True, help="Only warnings and errors.")),
    (("--log-format",), dict(envvar="RECSYS_LOG_FORMAT", type=click.Choice(["text", "json"]), default="text",
                             help="json: one JSON object per line (run_id, stage, seconds). "
                                  "[env: RECSYS_LOG_FORMAT]")),
)
SHARED = {decls[-1].lstrip("-").replace("-", "_"): decls for decls, _ in REDIS + DATA + LOGS}
JSON = click.option("--json", "as_json", is_flag=True,  # of every command that prints data
                    help="Machine-readable output (typed: numbers, objects).")


class Context:
    """The shared options of one command (``ctx.obj``); the Redis client is opened lazily."""

    def __init__(self, redis_url: str | None = None, prefix: str = DEFAULT_PREFIX,
                 data_dir: Path | str | None = None, dataset: str = "ml-1m", *, data_dir_given: bool = False,
                 verbose: int = 0, quiet: bool = False, log_format: str = "text"):
        self.redis_url, self.prefix, self.data_dir = redis_url or None, prefix, paths.data_dir(data_dir)
        self.release = RELEASES[dataset]
        self.data_dir_given = data_dir_given  # typed on the command line: no implicit download
        self.verbose, self.quiet, self.log_format = verbose, quiet, log_format
        self._store = None

    def setup_logging(self) -> None:
        """Configure logging to stderr from ``-v`` / ``-q`` / ``--log-format``."""
        level = logging.WARNING if self.quiet else logging.DEBUG if self.verbose > 1 else logging.INFO
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        logging.getLogger().setLevel(level)
        if self.log_format == "json":
            from batch import telemetry

            telemetry.use_json_logs()

    def store(self, *, create: bool = True, printed: bool = False):
        """Return the RunStore on the configured Redis (connected and pinged on first use).

        ``create=False`` (commands that only read or repair): never create the embedded server.
        :meth:`where` is logged at INFO by a command that may create it (a writer), unless that
        command prints it (``printed``), else at DEBUG (``-vv``).
        """
        if self._store is None:
            self._store = RunStore.open(self.redis_url, Keys(self.prefix), create=create)
            log.log(logging.INFO if create and not printed else logging.DEBUG, "%s", self.where())
        return self._store

    def where(self, inspect: bool = False) -> str:
        """Return the one line saying which data directory and Redis this command uses (password-free)."""
        from lookup_api import where

        return where.describe(self.data_dir, self.redis_url, inspect=inspect)

    def durable(self):
        """Return a context in which the embedded server fsyncs each write (no-op with REDIS_URL)."""
        if self.redis_url is not None:
            return contextlib.nullcontext()
        from lookup_api.embedded_redis import fsynced

        return fsynced(self.store().client)

    def require_data(self, download: bool | None = False) -> None:
        """Refuse a ``--data-dir`` typed on the command line that lacks the dataset, unless ``download``
        (:func:`batch.download.require_dataset`; ``None``: the command has no ``--download``)."""
        if self.data_dir_given:
            require_dataset(self.data_dir, self.release, download)


TYPED = (ParameterSource.COMMANDLINE, ParameterSource.PROMPT)


def shared_options(*sets, **override):
    """Return a decorator adding the options of ``sets`` (``override``: attributes changed in each)."""
    def add(command):
        for decls, attrs in (option for options in sets for option in options):
            command = click.option(*decls, **{**attrs, **override})(command)  # a Command appends each
        return command

    return add


def uses(command: click.Command, *sets) -> click.Command:
    """Add the option sets ``sets`` to ``command``; its callback then finds their values in ``ctx.obj``,
    and a Redis failure in a command that uses :data:`REDIS` becomes one line
    (:func:`batch.store.redis_errors`).

    A shared option typed before the command name (``recsys-batch --data-dir DIR run``, read by
    the root group) counts as typed on the command, unless the command was given its own.
    """
    command = shared_options(*sets)(command)
    callback = command.callback

    @functools.wraps(callback)
    def with_context(**kwargs):
        ctx = click.get_current_context()
        root = ctx.find_root()
        shared = {name: kwargs.pop(name) for name in SHARED if name in kwargs}
        typed = {name for name in shared if ctx.get_parameter_source(name) in TYPED}
        before = {name for name in shared if root.get_parameter_source(name) in TYPED} - typed
        shared.update((name, root.params[name]) for name in before)
        ctx.obj = Context(**shared, data_dir_given="data_dir" in typed | before)
        ctx.obj.setup_logging()
        with redis_errors(ctx.obj.redis_url) if "redis_url" in shared else contextlib.nullcontext():
            return callback(**kwargs)

    command.callback = with_context
    return command


class Group(click.Group):
    """A Click group whose command list shows each command's whole summary line (wrapped, not cut).

    The root group turns every :class:`RecsysError` into one ``Error:`` line with exit status 1.
    """

    def invoke(self, ctx: click.Context):
        """Run the command; library errors become one line (see :func:`fail_cleanly`)."""
        return fail_cleanly(super().invoke)(ctx) if ctx.parent is None else super().invoke(ctx)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Write the command list with untruncated summaries."""
        rows = [(name, cmd.get_short_help_str(limit=200)) for name in self.list_commands(ctx)
                if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (Kubernetes eviction, deadline, node drain): stop exactly as on Ctrl-C."""


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise Terminated


def fail_cleanly(func):
    """Turn a RecsysError into ClickException (one line, exit 1); Ctrl-C into ``Aborted!``, exit 130.

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
        except RecsysError as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            if main:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return wrapper
