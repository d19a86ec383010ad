"""``recsys-batch run``, ``download``, ``status``, ``show``, ``rollback``, ``unlock``: everyday commands."""

from __future__ import annotations

import json
import sys

import click

from batch import telemetry
from batch.cli.common import Context, redis_errors
from batch.cli.options import ALLOW_EVICTION, DATASET_URL, DOWNLOAD, FORCE, KEEP, PARAMS_FILE, param_options
from batch.params import load_params
from lookup_api.contract.keys import MAX_ID
from lookup_api.contract.meta import F, RunMeta
from lookup_api.contract.reader import parse_exclude

DEFAULT_N = 10  # items shown without -n, as the API's default ?n= (lookup_api.views)


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


def _read_only_store(obj: Context):
    """Return ``(store, None)``, or ``(None, why)`` when there is no embedded server (nothing published)."""
    from lookup_api.embedded_redis import EmbeddedError

    try:
        return obj.store(create=False), None
    except EmbeddedError as exc:
        return None, str(exc)




@click.command(short_help="Show the live run, its metadata and the run history.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (typed: numbers, objects).")
@click.pass_obj
def status(obj: Context, as_json):
    """Show the live run, its metadata (timings: every stage, publish, total) and the run history.

    \b
    Example:
      recsys-batch status
      recsys-batch status --json
    """
    store, why = _read_only_store(obj)
    live, history, meta = None, [], None
    if store is not None:
        live = store.current()
        history = store.runs()
        meta = store.meta(live) if live else None
    age = telemetry.age_seconds(meta)
    if as_json:
        click.echo(json.dumps({"current": live, "age_seconds": age, "meta": meta.as_dict() if meta else {},
                               "runs": [{"run_id": r, "created_ts": s} for r, s in history]}, indent=2))
        return
    if live is None:
        click.echo(f"no live run: {why or 'nothing has been published yet (run `recsys-batch run`)'}")
        return
    click.echo(f"live run: {live}" + (f" (age {telemetry.format_age(age)})" if age is not None else ""))
    typed = meta.as_dict() if meta else {}
    for key, value in sorted((meta.to_hash() if meta else {}).items()):
        if key == F.timings and isinstance(typed.get(key), dict):
            value = ", ".join(f"{k} {v:.2f}s" for k, v in typed[key].items())
        click.echo(f"  {key}: {value}")
    click.echo("history (newest first):")
    for run_id, _ in history:
        click.echo(f"  {'*' if run_id == live else ' '} {run_id}")


def check_n(n: int | None, top_n: int) -> int:
    """Return how many items to show: the API's rule for ``?n=`` (unset: 10, at most the list length)."""
    if n is None:
        return min(DEFAULT_N, top_n)
    if not 1 <= n <= top_n:
        raise click.BadParameter(f"n must be an integer from 1 to {top_n}, got {n}", param_hint="'-n'")
    return n


@click.command(short_help="Print what the API serves for a user.")
@click.argument("user_id", type=click.IntRange(1, MAX_ID))
@click.option("-n", type=int, default=None, show_default=False,
              help=f"How many items: 1 to the published list length [default: {DEFAULT_N}, at most that "
                   "length], as the API's ?n=.")
@click.option("--exclude", default=None, metavar="ID,...",
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
        drop = parse_exclude(exclude)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--exclude'") from None
    store, _ = _read_only_store(obj)
    live = store.current() if store is not None else None
    if live is None:
        raise click.ClickException("no run has been published yet (run `recsys-batch run`)")
    gone = f"the live run {live} has no keys (deleted?); see `recsys-batch status`"
    top_n = (store.meta(live) or RunMeta()).top_n or len(store.popular(live) or [])
    if not top_n:
        raise click.ClickException(gone)
    n = check_n(n, top_n)
    try:
        served = store.served(user_id, n, drop, run_id=live)
    except LookupError:
        raise click.ClickException(gone) from None
    click.echo(f"user {user_id}: {served.source} list from run {live}")
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
    store = obj.store(create=False)
    holder = store.unlock(force=force)
    click.echo("no batch lock is held" if holder is None else f"cleared the lock of {holder.describe()}")
