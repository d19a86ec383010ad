"""``recsys-batch``: a thin Click layer over the batch library.

Library errors become one-line messages with exit status 1 (CronJobs retry on it);
usage errors exit 2; Ctrl-C prints ``Aborted!`` and exits 130; anything unexpected prints a
traceback and exits 1.  Commands live in their own modules and are registered here explicitly
(no module imports this one back).  The shared options are accepted before or after the command.
"""

from __future__ import annotations

import click

from batch.cli import catalog, embedded, evaluate, ops, sharded
from batch.cli.common import Group, group_options, make_context, shared_options


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@group_options
@click.pass_context
def cli(ctx, redis_url, prefix, data_dir, dataset, verbose, quiet, log_format):
    """Train the MovieLens recommender and publish every user's top-N to Redis.

    The shared options below may also follow the command (`recsys-batch run --data-dir DIR`).

    \b
    Example:
      recsys-batch run                       # download ML-1M into data/ if needed, train, publish
      recsys-batch run --data-dir /path/to/ml-1m
      REDIS_URL=redis://127.0.0.1:6379/0 recsys-batch status
    """
    ctx.obj = make_context(ctx, redis_url, prefix, data_dir, dataset, verbose, quiet, log_format)


for command in (ops.run, ops.download_cmd, ops.status, ops.show, ops.rollback, ops.unlock, evaluate.evaluate,
                evaluate.tune, sharded.train, sharded.score, sharded.publish, embedded.embedded,
                *catalog.COMMANDS):
    cli.add_command(shared_options(command) if not isinstance(command, click.Group) else command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="recsys-batch")
