"""``recsys-batch``: a thin Click layer over the batch library.

Library errors become one-line messages with exit status 1 (CronJobs retry on it);
usage errors exit 2; anything unexpected prints a traceback and exits 1.  Commands live in
their own modules and are registered here explicitly (no module imports this one back).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from batch import telemetry
from batch.cli import evaluate, ops, sharded
from batch.cli.common import Context
from batch.download import RELEASES
from lookup_api.contract.keys import DEFAULT_PREFIX


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--redis-url", envvar="REDIS_URL", default=None,
              help="Redis server URL (redis://, rediss://, unix://, redis+cluster://). Unset: an embedded "
                   "server persisted in $RECSYS_EMBEDDED_DIR (default data/redis). [env: REDIS_URL]")
@click.option("--prefix", envvar="RECSYS_PREFIX", default=DEFAULT_PREFIX,
              help="Key prefix in Redis. [env: RECSYS_PREFIX]")
@click.option("--data-dir", envvar="RECSYS_DATA_DIR", default="data",
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory with ratings.dat + movies.dat, or where ML-1M is downloaded to. "
                   "[env: RECSYS_DATA_DIR]")
@click.option("--dataset", envvar="RECSYS_DATASET", default="ml-1m", type=click.Choice(list(RELEASES)),
              help="MovieLens release to download/read (.dat for 1m/10m, CSV for 20m/25m/latest-small). "
                   "[env: RECSYS_DATASET]")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--log-format", envvar="RECSYS_LOG_FORMAT", type=click.Choice(["text", "json"]), default="text",
              help="json: one JSON object per line (run_id, stage, seconds). [env: RECSYS_LOG_FORMAT]")
@click.pass_context
def cli(ctx, redis_url, prefix, data_dir, dataset, verbose, quiet, log_format):
    """Train the MovieLens recommender and publish every user's top-N to Redis.

    \b
    Example:
      recsys-batch run                       # download ML-1M if needed, train, publish
      REDIS_URL=redis://127.0.0.1:6379/0 recsys-batch status
    """
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if log_format == "json":
        telemetry.use_json_logs()
    ctx.obj = Context(redis_url, prefix, data_dir, dataset)



for command in (ops.run, ops.download_cmd, ops.status, ops.show, ops.rollback, evaluate.evaluate,
                evaluate.tune, sharded.train, sharded.score, sharded.publish):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="recsys-batch")
