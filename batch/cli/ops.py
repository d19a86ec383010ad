"""``recsys-batch run``, ``download``, ``status``, ``show``, ``rollback``: the everyday commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from batch import telemetry
from batch.cli.common import Context, fail_cleanly
from batch.download import download
from batch.params import RANKERS, TUNED_PATH, load_params
from batch.store import redis_errors
from lookup_api.contract.connection import describe
from lookup_api.contract.keys import DEFAULT_KEEP


@click.command()
@click.option("--top-n", type=click.IntRange(1, 1000),
              help="List length per user [default: from the tuned file, else 50].")
@click.option("--candidates", type=click.IntRange(1, 5000),
              help="ALS candidates per user [default: from the tuned file (200), else 100].")
@click.option("--content-candidates", type=click.IntRange(0, 5000),
              help="TF-IDF genre candidates per user [default: from the tuned file, else 30].")
@click.option("--ranker", type=click.Choice(RANKERS),
              help="svd: SVD predicted rating (original design); blend: tuned blend.")
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help=f"Parameter file written by `tune` [default: {TUNED_PATH.name} "
                                 "in the batch package, else built-in defaults].")
@click.option("--als-factors", type=click.IntRange(1, 1024))
@click.option("--als-regularization", type=click.FloatRange(0))
@click.option("--als-iterations", type=click.IntRange(1, 500))
@click.option("--als-alpha", type=click.FloatRange(0, min_open=True))
@click.option("--als-weighting", type=click.Choice(["raw", "binary", "liked", "bm25"]))
@click.option("--svd-factors", type=click.IntRange(1, 1024))
@click.option("--svd-lr", type=click.FloatRange(0, min_open=True))
@click.option("--svd-reg", type=click.FloatRange(0))
@click.option("--svd-epochs", type=click.IntRange(1, 500))
@click.option("--seed", type=int)
@click.option("--keep", type=click.IntRange(1, 100), default=DEFAULT_KEEP,
              help="Complete runs to keep in Redis (older ones are deleted).")
@click.option("--dry-run", is_flag=True, help="Compute everything, write nothing to Redis.")
@click.option("--lock-ttl", type=click.FloatRange(1), default=60.0,
              help="Seconds a crashed run's lock outlives its last heartbeat.")
@click.option("--dataset-url", envvar="RECSYS_DATASET_URL", default=None,
              help="Mirror of the release's zip (checksums are still verified). [env: RECSYS_DATASET_URL]")
@click.option("--pushgateway", envvar="RECSYS_PUSHGATEWAY", default=None,
              help="Prometheus Pushgateway (host:port or URL) to push the run's metrics to, success or "
                   "failure; a failed push only warns. [env: RECSYS_PUSHGATEWAY]")
@click.pass_obj
@fail_cleanly
@telemetry.reported
def run(obj: Context, params_file, keep, dry_run, lock_ttl, dataset_url, **overrides):
    """Train on all ratings, rank candidates for every user, publish atomically.

    \b
    Example:
      recsys-batch run --top-n 50 --ranker blend
      recsys-batch --data-dir ../shared/data/ml-1m run --dry-run
    """
    from batch.job import run_job

    params = load_params(params_file).with_(**overrides)
    store = None if dry_run else obj.store()
    if store is None:
        result = run_job(obj.data_dir, params, None, url=dataset_url, release=obj.release)
    else:
        with redis_errors(obj.redis_url), store.lock(ttl=lock_ttl) as token:
            result = run_job(obj.data_dir, params, store, keep=keep, url=dataset_url,
                             progress=sys.stderr.isatty(), release=obj.release, token=token)
    t = result.timings
    verb = "computed (dry run)" if dry_run else "published"
    click.echo(f"run {result.run_id} {verb}: {result.users} users, {result.items} movies, "
               f"{result.ratings} ratings in {t.get('total', 0):.1f}s")
    if not dry_run:
        click.echo(f"redis: {describe(store.client)}; inspect: recsys-batch status")
    return result


@click.command("download")
@click.option("--url", default=None, help="Mirror of the release's zip (checksums are still verified).")
@click.option("--force", is_flag=True, help="Download again even if the files are present.")
@click.pass_obj
@fail_cleanly
def download_cmd(obj: Context, url, force):
    """Download the MovieLens release into DATA_DIR/<release> and verify its checksums.

    \b
    Example:
      recsys-batch --data-dir data download
      recsys-batch --dataset ml-20m download
    """
    target = download(obj.data_dir, obj.release, url=url, force=force)
    click.echo(f"{obj.release.name} ready in {target}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def status(obj: Context, as_json):
    """Show the live run, its metadata and the run history.

    \b
    Example:
      recsys-batch status --json
    """
    store = obj.store()
    with redis_errors(obj.redis_url):
        live = store.current()
        history = store.runs()
        meta = store.meta(live) if live else {}
    age = telemetry.age_seconds(meta)
    if as_json:
        click.echo(json.dumps({"current": live, "age_seconds": age, "meta": meta,
                               "runs": [{"run_id": r, "created_ts": s} for r, s in history]}, indent=2))
        return
    if live is None:
        click.echo("no live run: nothing has been published yet (run `recsys-batch run`)")
        return
    click.echo(f"live run: {live}" + (f" (age {telemetry.format_age(age)})" if age is not None else ""))
    for key in sorted(meta):
        click.echo(f"  {key}: {meta[key]}")
    click.echo("history (newest first):")
    for run_id, _ in history:
        click.echo(f"  {'*' if run_id == live else ' '} {run_id}")


@click.command()
@click.argument("user_id", type=click.IntRange(1))
@click.option("-n", type=click.IntRange(1), default=10, help="How many items.")
@click.pass_obj
@fail_cleanly
def show(obj: Context, user_id, n):
    """Print what the API serves for USER_ID (the popular list for unknown users).

    \b
    Example:
      recsys-batch show 42 -n 5
    """
    from lookup_api.service import Lookup, NoLiveRun, StoreUnavailable

    store = obj.store()
    try:
        with redis_errors(obj.redis_url):
            result = Lookup(store.client, store.keys).recommendations(user_id, n)
    except NoLiveRun as exc:
        raise click.ClickException(str(exc)) from None
    except StoreUnavailable:
        raise click.ClickException(
            f"the live run {store.current()} has no keys (deleted?); see `recsys-batch status`") from None
    click.echo(f"user {user_id}: {result.source} list from run {result.run_id}")
    for rank, item in enumerate(result.items, start=1):
        click.echo(f"{rank:3d}. {item['title']} [{'|'.join(item['genres'])}] "
                   f"(movie {item['movie_id']}, score {item['score']:.3f})")


@click.command()
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
    store = obj.store()
    with redis_errors(obj.redis_url):
        target = store.rollback(run_id)
    click.echo(f"current -> {target}")
