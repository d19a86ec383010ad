"""``recsys-batch evaluate`` and ``recsys-batch tune``: offline evaluation on the random and time splits."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import click

from batch.cli.common import Context
from batch.cli.options import DOWNLOAD, PARAMS_FILE
from batch.params import RANKERS, TUNED_PATH, Params, load_params, tuned_document
from lookup_api.contract.errors import RecsysError


def _command_line(ctx: click.Context) -> str:
    if os.path.basename(sys.argv[0]) == "recsys-batch":
        return shlex.join(["recsys-batch", *sys.argv[1:]])
    return ctx.command_path


def _load(obj: Context, download: bool):
    """Return (ratings, movies, provenance) of the dataset under ``--data-dir``."""
    from batch.job import code_version, dataset_checksum, resolve_data_dir
    from batch.movielens_ratings import load_dir

    obj.require_data(download)
    directory = resolve_data_dir(obj.data_dir, release=obj.release)
    ratings, movies = load_dir(directory, obj.release.fmt)
    return ratings, movies, {"dataset": obj.release.name,
                             "dataset_sha256": dataset_checksum(directory, obj.release),
                             "code_version": code_version()}


EVAL_EXTRA = ("matplotlib",)  # what the `eval` extra adds to `batch` (pyproject.toml)


def require_eval_extra() -> None:
    """Exit 1 with one line when the `eval` extra is not installed (the nightly image lacks it)."""
    import importlib.util

    missing = [m for m in EVAL_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise RecsysError(f"the evaluation needs the eval extra ({', '.join(missing)} missing): "
                                   "run `uv sync --extra batch --extra eval`")


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
    require_eval_extra()
    from batch.evaluation.evaluate import evaluate_protocols
    from batch.evaluation.protocol import PROTOCOLS
    from batch.evaluation.report import format_table, write_report

    params = load_params(params_file).with_(ranker=ranker)
    baselines = tuned_document(params_file).get("baselines", {})
    ratings, movies, provenance = _load(ctx.obj, download)
    report = evaluate_protocols(ratings, movies, params, tuple(protocols) or PROTOCOLS, baselines=baselines,
                                phase=phase, original_users=original_users)
    report.update(provenance, command=_command_line(ctx))
    click.echo(format_table(report, cutoff))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1) + "\n")
        click.echo(f"json: {json_path}")
    if report_dir:
        paths = write_report(report, report_dir, cutoff, report["command"])
        click.echo(f"report: {', '.join(map(str, paths))}")
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
    require_eval_extra()
    from batch.evaluation.protocol import PROTOCOLS
    from batch.evaluation.tuning import SMALL, SearchSpace, assemble, write_tuned
    from batch.evaluation.tuning import tune as run_tune

    ratings, movies, provenance = _load(ctx.obj, download)
    started = time.perf_counter()
    previous = tuned_document(output) if output.exists() else {}
    base = Params.from_dict(previous["params"]) if "params" in previous else Params()
    space = SMALL if quick else SearchSpace()
    sections = run_tune(ratings, movies, base, space, tuple(protocols) or PROTOCOLS, seed)
    doc = assemble(previous, sections, {"command": _command_line(ctx), **provenance}, space, seed)
    path = write_tuned(doc, output)
    for protocol, section in sections["baselines"].items():
        for key, chosen in section.items():
            click.echo(f"{protocol} {key}: "
                       f"{json.dumps(chosen['settings'])}, validation {chosen['validation']}")
    for protocol, value in sections["validation"].items():
        click.echo(f"{protocol} validation: {json.dumps(value)}")
    defaults = Params().to_dict()
    changed = {k: v for k, v in doc["params"].items() if defaults[k] != v}
    click.echo(f"default pipeline (changes from the built-in defaults): {json.dumps(changed)}")
    trials = sum(map(len, sections["trials"].values()))
    click.echo(f"{trials} trials in {time.perf_counter() - started:.0f}s; written to {path}")
