"""``recsys-batch run``, ``download``, ``status``, ``show``, ``rollback``, ``unlock``: everyday commands."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from batch import telemetry
from batch.cli.common import Context, describe, fail_cleanly, redis_errors
from batch.cli.options import param_options
from batch.params import TUNED_PATH, load_params
from lookup_api.contract.keys import DEFAULT_KEEP, MAX_ID
from lookup_api.contract.meta import F, RunMeta
from lookup_api.contract.reader import parse_exclude

log = logging.getLogger(__name__)


@click.command(short_help="Train on all ratings, rank for every user, publish atomically.")
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help=f"Parameter file written by `tune` [default: {TUNED_PATH.name} "
                                 "in the batch package, else built-in defaults].")
@param_options
@click.option("--keep", type=click.IntRange(1, 100), default=DEFAULT_KEEP,
              help="Complete runs to keep in Redis (older ones are deleted).")
@click.option("--dry-run", is_flag=True, help="Compute everything, write nothing to Redis.")
@click.option("--lock-ttl", type=click.FloatRange(1), default=60.0,
              help="Seconds a crashed run's lock outlives its last heartbeat.")
@click.option("--download", is_flag=True, envvar="RECSYS_DOWNLOAD",
              help="Download the dataset into --data-dir if it is not there (the default data "
                   "directory is always downloaded into). [env: RECSYS_DOWNLOAD]")
@click.option("--dataset-url", envvar="RECSYS_DATASET_URL", default=None,
              help="Mirror of the release's zip (checksums are still verified). [env: RECSYS_DATASET_URL]")
@click.option("--pushgateway", envvar="RECSYS_PUSHGATEWAY", default=None,
              help="Prometheus Pushgateway (host:port or URL) to push the run's metrics to, success or "
                   "failure; a failed push only warns. [env: RECSYS_PUSHGATEWAY]")
@click.option("--force", is_flag=True,
              help="Publish even a run the publish gate refuses (far fewer users, movies or ratings than "
                   "the live run, an empty list); the reasons are recorded in its meta.")
@click.option("--allow-eviction", is_flag=True, envvar="RECSYS_ALLOW_EVICTION",
              help="Publish to a Redis whose maxmemory-policy may evict keys (allkeys-*); users whose "
                   "list is evicted get the popular list. [env: RECSYS_ALLOW_EVICTION]")
@click.pass_obj
@fail_cleanly
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
    if dry_run:
        result = run_job(obj.data_dir, params, None, url=dataset_url, release=obj.release)
        click.echo(f"dry run: {result.users} users, {result.items} movies, {result.ratings} ratings "
                   f"computed in {result.timings.get('total', 0):.1f}s; nothing written to Redis")
        return result
    store = obj.store()
    with redis_errors(obj.redis_url), store.lock(ttl=lock_ttl) as token:
        result = run_job(obj.data_dir, params, store, keep=keep, url=dataset_url,
                         progress=sys.stderr.isatty(), release=obj.release, token=token, force=force,
                         allow_eviction=allow_eviction)
        with obj.durable():  # on disk, the flip and all before it, before "published" is printed
            store.set_timings(result.run_id, result.timings)
    t = result.timings
    click.echo(f"run {result.run_id} published: {result.users} users, {result.items} movies, "
               f"{result.ratings} ratings in {t.get('total', 0):.1f}s (publish {t.get('publish', 0):.1f}s)")
    click.echo(f"redis: {describe(store.client)}")
    if obj.redis_url is None:
        click.echo("the embedded redis-server keeps running for the API and later commands; "
                   "stop it with `recsys-batch embedded stop`")
    return result


@click.command("download", short_help="Download the MovieLens release and verify its checksums.")
@click.option("--url", default=None, help="Mirror of the release's zip (checksums are still verified).")
@click.option("--force", is_flag=True, help="Download again even if the files are present.")
@click.pass_obj
@fail_cleanly
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
    """Return the store, or None when the embedded server's directory does not exist (nothing published)."""
    from lookup_api.contract.embedded import EmbeddedError

    try:
        return obj.store(create=False)
    except EmbeddedError as exc:
        log.info("%s", exc)
        return None


def format_timings(raw: str | None) -> str:
    """Return stage timings as one line: ``load 0.26s, train_als 2.40s, ..., publish 0.22s, total 8.5s``."""
    try:
        timings = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return raw or ""
    return ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())


@click.command(short_help="Show the live run, its metadata and the run history.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def status(obj: Context, as_json):
    """Show the live run, its metadata (timings: every stage, publish, total) and the run history.

    \b
    Example:
      recsys-batch status
      recsys-batch status --json
    """
    store = _read_only_store(obj)
    live, history, meta = None, [], None
    if store is not None:
        with redis_errors(obj.redis_url):
            live = store.current()
            history = store.runs()
            meta = store.meta(live) if live else None
    age = telemetry.age_seconds(meta)
    if as_json:
        click.echo(json.dumps({"current": live, "age_seconds": age, "meta": meta.to_hash() if meta else {},
                               "runs": [{"run_id": r, "created_ts": s} for r, s in history]}, indent=2))
        return
    if live is None:
        click.echo("no live run: nothing has been published yet (run `recsys-batch run`)")
        return
    click.echo(f"live run: {live}" + (f" (age {telemetry.format_age(age)})" if age is not None else ""))
    shown = meta.to_hash() if meta else {}
    for key in sorted(shown):
        click.echo(f"  {key}: {format_timings(shown[key]) if key == F.timings else shown[key]}")
    click.echo("history (newest first):")
    for run_id, _ in history:
        click.echo(f"  {'*' if run_id == live else ' '} {run_id}")


@click.command(short_help="Print what the API serves for a user.")
@click.argument("user_id", type=click.IntRange(1, MAX_ID))
@click.option("-n", type=click.IntRange(1), default=10,
              help="How many items: 1 to the published list length, as the API's ?n=.")
@click.option("--exclude", default=None, metavar="ID,...",
              help="Movie ids to leave out, as the API's ?exclude= (at most 100).")
@click.pass_obj
@fail_cleanly
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
    store = _read_only_store(obj)
    with redis_errors(obj.redis_url):
        live = store.current() if store is not None else None
        if live is None:
            raise click.ClickException("no run has been published yet (run `recsys-batch run`)")
        gone = f"the live run {live} has no keys (deleted?); see `recsys-batch status`"
        top_n = (store.meta(live) or RunMeta()).top_n or len(store.popular(live) or [])
        if not top_n:
            raise click.ClickException(gone)
        if not 1 <= n <= top_n:  # the API's rule for ?n= (400 there)
            raise click.BadParameter(f"n must be an integer from 1 to {top_n}, got {n}", param_hint="'-n'")
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
@fail_cleanly
def rollback(obj: Context, run_id):
    """Point the live run at RUN_ID (default: the previous complete run).

    \b
    Example:
      recsys-batch rollback                  # one run back
      recsys-batch rollback 20261126T020000Z-3f9a
    """
    from batch.lifecycle import rollback as roll_back

    store = obj.store(create=False)
    with redis_errors(obj.redis_url), obj.durable():
        target = roll_back(store, run_id)
    click.echo(f"current -> {target}")


@click.command(short_help="Clear a batch lock whose holder is gone.")
@click.option("--force", is_flag=True,
              help="Clear it even while its holder looks alive (that run then stops before publishing).")
@click.pass_obj
@fail_cleanly
def unlock(obj: Context, force):
    """Clear the batch lock a run left behind (refused while its holder is alive, unless --force).

    A holder on this host is alive while its process is; elsewhere while it renews the lock.

    \b
    Example:
      recsys-batch unlock
      recsys-batch unlock --force
    """
    store = obj.store(create=False)
    with redis_errors(obj.redis_url):
        holder = store.unlock(force=force)
    click.echo("no batch lock is held" if holder is None else f"cleared the lock of {holder.describe()}")
