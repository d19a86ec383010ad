"""``recsys-batch run``, ``download``, ``status``, ``show``, ``rollback``, ``unlock``: everyday commands."""

from __future__ import annotations

import sys

import click

from batch import telemetry
from batch.cli.common import JSON, Context, parsed
from batch.cli.options import ALLOW_EVICTION, DATASET_URL, DOWNLOAD, FORCE, KEEP, PARAMS_FILE, param_options
from batch.params import load_params
from batch.store import RefusedN, redis_errors
from lookup_api.contract.keys import MAX_ID
from lookup_api.contract.reader import DEFAULT_N, parse_exclude


@click.command(short_help="Train on all ratings, rank for every user, publish atomically.")
@PARAMS_FILE
@param_options
@KEEP
@click.option("--dry-run", is_flag=True, help="Compute everything, write nothing to Redis.")
@click.option("--lock-ttl", type=click.FloatRange(1), default=60.0,
              help="Seconds a crashed run's lock outlives its last heartbeat.")
@DOWNLOAD
@DATASET_URL
@click.option("--pushgateway", envvar="RECSYS_PUSHGATEWAY", default=None,
              help="Prometheus Pushgateway (host:port or URL) to push the run's metrics to, success or "
                   "failure; a failed push only warns. [env: RECSYS_PUSHGATEWAY]")
@FORCE
@ALLOW_EVICTION
@click.pass_obj
@telemetry.reported
def run(obj: Context, params_file, keep, dry_run, lock_ttl, download, dataset_url, force, allow_eviction,
        **overrides):
    """Train on all ratings, rank candidates for every user, publish atomically.

    Every model setting below overrides the tuned file's value for this run.

    \b
    Example:
      recsys-batch run --top-n 50 --ranker blend
      recsys-batch run --data-dir /path/to/ml-1m --dry-run
    """
    from batch.job import run_job

    params = load_params(params_file).with_(**overrides)
    obj.require_data(download)
    store = None if dry_run else obj.store(printed=True)
    with redis_errors(obj.redis_url):  # here too, inside `reported`: the failure metric says StoreError
        result = run_job(obj.data_dir, params, store, keep=keep, url=dataset_url, release=obj.release,
                         progress=sys.stderr.isatty(), lock_ttl=lock_ttl, durable=obj.durable, force=force,
                         allow_eviction=allow_eviction)
    t = result.timings
    if store is None:
        click.echo(f"dry run: {result.users} users, {result.items} movies, {result.ratings} ratings "
                   f"computed in {t.get('total', 0):.1f}s; nothing written to Redis")
        return result
    click.echo(f"run {result.run_id} published: {result.users} users, {result.items} movies, "
               f"{result.ratings} ratings in {t.get('total', 0):.1f}s (publish {t.get('publish', 0):.1f}s)")
    click.echo(obj.where(inspect=True))
    return result


@click.command("download", short_help="Download the MovieLens release and verify its checksums.")
@click.option("--url", default=None, help="Mirror of the release's zip (checksums are still verified).")
@click.option("--force", is_flag=True, help="Download again even if the files are present.")
@click.pass_obj
def download_cmd(obj: Context, url, force):
    """Download the MovieLens release into DATA_DIR/<release> and verify its checksums.

    \b
    Example:
      recsys-batch download
      recsys-batch download --dataset ml-20m --data-dir /srv/movielens
    """
    from batch.download import download

    target = download(obj.data_dir, obj.release, url=url, force=force)
    click.echo(f"{obj.release.name} ready in {target}")


@click.command(short_help="Show the live run, its metadata and the run history.")
@JSON
@click.pass_obj
def status(obj: Context, as_json):
    """Show the live run, its metadata (timings: every stage, publish, total) and the run history.

    \b
    Example:
      recsys-batch status
      recsys-batch status --json
    """
    click.echo(telemetry.status_report(lambda: obj.store(create=False), as_json))


@click.command(short_help="Print what the API serves for a user.")
@click.argument("user_id", type=click.IntRange(1, MAX_ID))
@click.option("-n", metavar="N", help=f"How many items: 1 to the published list length [default: "
                                      f"{DEFAULT_N}, at most that length], as the API's ?n=.")
@click.option("--exclude", callback=parsed(parse_exclude), metavar="ID,...",
              help="Movie ids to leave out, as the API's ?exclude= (at most 100).")
@click.pass_obj
def show(obj: Context, user_id, n, exclude):
    """Print what the API serves for USER_ID (the popular list for unknown users).

    The same reader and serving rule as the API: hidden titles and --exclude ids are dropped.

    \b
    Example:
      recsys-batch show 42 -n 5 --exclude 2858,260
    """
    try:
        served = obj.store(create=False).show(user_id, n, exclude)
    except RefusedN as exc:
        raise click.BadParameter(str(exc), param_hint="'-n'") from None
    click.echo(f"user {user_id}: {served.source} list from run {served.run_id}")
    for rank, item in enumerate(served.items(), start=1):
        click.echo(f"{rank:3d}. {item['title']} [{'|'.join(item['genres'])}] (movie {item['movie_id']}, "
                   f"score {item['score']:.3f}, predicted rating {item['predicted_rating']:.1f})")


@click.command(short_help="Point the live run at an earlier complete run.")
@click.argument("run_id", required=False)
@click.pass_obj
def rollback(obj: Context, run_id):
    """Point the live run at RUN_ID (default: the previous complete run).

    \b
    Example:
      recsys-batch rollback                  # one run back
      recsys-batch rollback 20261126T020000Z-3f9a
    """
    from batch.lifecycle import rollback as roll_back

    store = obj.store(create=False)
    with obj.durable():
        target = roll_back(store, run_id)
    click.echo(f"current -> {target}")


@click.command(short_help="Clear a batch lock whose holder is gone.")
@click.option("--force", is_flag=True,
              help="Clear it even while its holder looks alive (that run then stops before publishing).")
@click.pass_obj
def unlock(obj: Context, force):
    """Clear the batch lock a run left behind (refused while its holder is alive, unless --force).

    A holder on this host is alive while its process is; elsewhere while it renews the lock.

    \b
    Example:
      recsys-batch unlock
      recsys-batch unlock --force
    """
    holder = obj.store(create=False).unlock(force=force)
    click.echo("no batch lock is held" if holder is None else f"cleared the lock of {holder.describe()}")
