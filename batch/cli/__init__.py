"""``recsys-batch``: a thin Click layer over the batch library.

Library errors (:class:`~lookup_api.contract.errors.RecsysError`) become one ``Error:`` line with
exit status 1 (CronJobs retry on it); usage errors exit 2; Ctrl-C prints ``Aborted!`` and exits
130; anything unexpected prints a traceback and exits 1.  Commands live in their own modules and
are registered here with the shared option sets each one uses (no module imports this one back).
"""

from __future__ import annotations

import click

from batch.cli import catalog, embedded, evaluate, ops, sharded
from batch.cli.common import DATA, LOGS, REDIS, Group, shared_options, uses


# The shared options are also read before the command name, for the command (see `uses`): there
# hidden, and without their environment variables (each command reads those itself).
@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@shared_options(REDIS, DATA, LOGS, envvar=None, hidden=True)
def cli(**_shared):
    """Train the MovieLens recommender and publish every user's top-N to Redis.

    Each command takes the shared options it uses (--redis-url, --prefix, --data-dir, --dataset,
    -v, -q, --log-format); they may also come before the command (`recsys-batch --data-dir DIR run`),
    where the command ignores those it does not take; one typed after the command wins.

    \b
    Example:
      recsys-batch run                       # download ML-1M into data/ if needed, train, publish
      recsys-batch run --data-dir /path/to/ml-1m
      REDIS_URL=redis://127.0.0.1:6379/0 recsys-batch status
    """


for command, sets in ((ops.run, (REDIS, DATA)), (ops.download_cmd, (DATA,)), (ops.status, (REDIS,)),
                      (ops.show, (REDIS,)), (ops.rollback, (REDIS,)), (ops.unlock, (REDIS,)),
                      (evaluate.evaluate, (DATA,)), (evaluate.tune, (DATA,)), (sharded.train, (REDIS, DATA)),
                      (sharded.score, (REDIS,)), (sharded.publish, (REDIS,)),
                      *((command, (REDIS,)) for command in catalog.COMMANDS)):
    cli.add_command(uses(command, *sets, LOGS))
cli.add_command(embedded.embedded)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="recsys-batch")
