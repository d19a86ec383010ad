"""``recsys-batch evaluate`` and ``recsys-batch tune``: offline evaluation on the random and time splits."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from batch.cli.options import DOWNLOAD, PARAMS_FILE
from batch.params import RANKERS, TUNED_PATH, load_params, tuned_document


def _command_line(ctx: click.Context) -> str:
    if os.path.basename(sys.argv[0]) == "recsys-batch":
        return shlex.join(["recsys-batch", *sys.argv[1:]])
    return ctx.command_path


@click.command(short_help="Compare the pipeline with tuned baselines on the random and time splits.")
@PARAMS_FILE
@click.option("--protocol", "protocols", type=click.Choice(["random", "temporal"]), multiple=True,
              help="random: the original 60/20/20 split by user; temporal: one global time split, warm "
                   "and cold users [default: both].")
@click.option("--ranker", type=click.Choice(RANKERS), help="Override the default pipeline's ranker.")
@click.option("--phase", type=click.Choice(["test", "validation"]), default="test",
              help="test: fit on train+validation, score test; validation: fit on train, score validation.")
@click.option("-k", "cutoff", type=click.IntRange(1, 50), default=10, help="Cut-off of the table.")
@click.option("--original-users", type=click.IntRange(1), default=200,
              help="Users sampled for the original-protocol rows.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every number and the protocol as JSON.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write evaluation.md, curves.png (random) and temporal.png (P@k, warm and cold users) "
                   "into this directory.")
@DOWNLOAD
@click.pass_context
def evaluate(ctx, params_file, protocols, ranker, phase, cutoff, original_users, json_path, report_dir,
             download):
    """Compare the pipeline with tuned baselines on the random split and on a time split (warm and cold
    users).  Needs the `eval` extra (`uv sync --extra batch --extra eval`).

    \b
    Example:
      recsys-batch evaluate --data-dir /path/to/ml-1m --json data/eval/evaluation.json --report data/eval
    """
    from batch.evaluation.evaluate import evaluate_protocols, load_dataset, require_eval_extra
    from batch.evaluation.protocol import PROTOCOLS
    from batch.evaluation.report import format_table, save

    require_eval_extra()
    params = load_params(params_file).with_(ranker=ranker)
    baselines = tuned_document(params_file).get("baselines", {})
    ctx.obj.require_data(download)
    ratings, movies, provenance = load_dataset(ctx.obj.data_dir, ctx.obj.release)
    report = evaluate_protocols(ratings, movies, params, tuple(protocols) or PROTOCOLS, baselines=baselines,
                                phase=phase, original_users=original_users)
    report.update(provenance, command=_command_line(ctx))
    click.echo(format_table(report, cutoff))
    for line in save(report, cutoff, json_path, report_dir):
        click.echo(line)
    click.echo(f"evaluated in {report['seconds']:.0f}s")


@click.command(short_help="Tune the baselines and the default on validation; write the tuned file.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=TUNED_PATH,
              show_default="batch/tuned_params.json",
              help="Where to write the tuned parameters (`run` and `evaluate` read the default path); a "
                   "protocol not tuned in this run keeps its sections from the file already there.")
@click.option("--protocol", "protocols", type=click.Choice(["random", "temporal"]), multiple=True,
              help="random: the baselines on the 60/20/20 split; temporal: the baselines, the fallback list "
                   "and the default pipeline on the time split [default: both].")
@click.option("--quick", is_flag=True, help="A tiny search space (smoke tests), not for real use.")
@click.option("--seed", type=int, default=42, help="Seed of the split and of the models.")
@DOWNLOAD
@click.pass_context
def tune(ctx, output, protocols, quick, seed, download):
    """Tune every baseline (per protocol), the fallback list and the default pipeline (temporal) on
    validation; write the tuned file.  Needs the `eval` extra.

    Fits on the train part and scores the validation part only: test is never read.

    \b
    Example:
      recsys-batch tune --data-dir /path/to/ml-1m              # writes batch/tuned_params.json
      recsys-batch tune --data-dir /path/to/ml-1m --protocol temporal --output data/tuned.json
    """
    from batch.evaluation.evaluate import load_dataset, require_eval_extra
    from batch.evaluation.protocol import PROTOCOLS
    from batch.evaluation.tuning import tune_file

    require_eval_extra()
    ctx.obj.require_data(download)
    ratings, movies, provenance = load_dataset(ctx.obj.data_dir, ctx.obj.release)
    for line in tune_file(ratings, movies, output, tuple(protocols) or PROTOCOLS, quick=quick, seed=seed,
                          provenance={"command": _command_line(ctx), **provenance}):
        click.echo(line)
