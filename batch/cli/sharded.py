"""``recsys-batch train`` / ``score`` / ``publish``: the sharded variant of ``run`` (:mod:`batch.sharded`)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from batch.cli.common import Context
from batch.cli.options import ALLOW_EVICTION, DATASET_URL, FORCE, KEEP, PARAMS_FILE, param_option
from batch.params import load_params

ARTIFACTS = click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path), required=True,
                         envvar="RECSYS_ARTIFACTS", help="Directory for model artifacts shared by train, "
                         "score and publish (e.g. a volume). [env: RECSYS_ARTIFACTS]")


@click.command()
@ARTIFACTS
@PARAMS_FILE
@param_option("top_n")
@param_option("ranker")
@click.option("--lock-ttl", type=click.FloatRange(1), default=900.0, show_default=True,
              help="Seconds the batch lock (the run's lease) outlives the last step that renewed it; "
                   "each step renews it by a heartbeat while it works; publish releases it.")
@DATASET_URL
@ALLOW_EVICTION
@click.pass_obj
def train(obj: Context, artifacts, params_file, top_n, ranker, lock_ttl, dataset_url, allow_eviction):
    """Sharded run, step 1: train once and write artifacts for `score --shard`.

    \b
    Example:
      recsys-batch train --artifacts /shared/run
      recsys-batch score --artifacts /shared/run --shard 0/3   # one per shard, in parallel
      recsys-batch publish --artifacts /shared/run --shards 3
    """
    from batch.sharded import train_job

    params = load_params(params_file).with_(top_n=top_n, ranker=ranker)
    obj.require_data(None)
    manifest = train_job(obj.data_dir, params, artifacts, obj.store(), release=obj.release,
                         url=dataset_url, lock_ttl=lock_ttl, allow_eviction=allow_eviction)
    click.echo(f"run {manifest['run_id']} trained: artifacts in {artifacts}")


@click.command()
@ARTIFACTS
@click.option("--shard", required=True, envvar="RECSYS_SHARD",
              help="I/N: score the I-th of N user slices (0-based). With JOB_COMPLETION_INDEX set "
                   "(Kubernetes Indexed Job), '$JOB_COMPLETION_INDEX/N' may be given as 'index/N'.")
@click.pass_obj
def score(obj: Context, artifacts, shard):
    """Sharded run, step 2: score one slice of users into the pending run.

    \b
    Example:
      recsys-batch score --artifacts /shared/run --shard 1/3
    """
    from batch.sharded import parse_shard, score_job

    if shard.startswith("index/"):  # read when the step runs: the pod sets JOB_COMPLETION_INDEX
        shard = f"{os.environ.get('JOB_COMPLETION_INDEX', '')}/{shard.split('/', 1)[1]}"
    try:
        index, total = parse_shard(shard)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--shard'") from None
    written = score_job(artifacts, (index, total), obj.store())
    click.echo(f"shard {index}/{total}: {written} user lists written")


@click.command()
@ARTIFACTS
@click.option("--shards", type=click.IntRange(1), required=True, help="How many shards the run has.")
@KEEP
@FORCE
@click.pass_obj
def publish(obj: Context, artifacts, shards, keep, force):
    """Sharded run, step 3: flip `current` once every shard is complete.

    \b
    Example:
      recsys-batch publish --artifacts /shared/run --shards 3
    """
    from batch.sharded import publish_job

    report = publish_job(artifacts, shards, obj.store(), keep=keep, force=force)
    if report.already:
        return click.echo(f"run {report.run_id} is already published; nothing to do")
    click.echo(f"run {report.run_id} published: {report.users} users from {shards} shards")
