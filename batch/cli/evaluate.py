"""``recsys-batch evaluate`` and ``recsys-batch tune``: offline evaluation on the random and time splits."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import click

from batch.cli.common import Context, fail_cleanly
from batch.params import RANKERS, TUNED_PATH, Params, load_params, tuned_document


def _command_line(ctx: click.Context) -> str:
    if os.path.basename(sys.argv[0]) == "recsys-batch":
        return shlex.join(["recsys-batch", *sys.argv[1:]])
    return ctx.command_path


DOWNLOAD_HELP = "Download the dataset into --data-dir if it is not there. [env: RECSYS_DOWNLOAD]"


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


@click.command(short_help="Compare the pipeline with baselines on the random and time splits.")
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"Parameters of the default pipeline [default: {TUNED_PATH.name}, else built-in].")
@click.option("--protocol", "protocols", type=click.Choice(["random", "temporal"]), multiple=True,
              help="random: the original 60/20/20 split by user; temporal: one global time split, warm "
                   "and cold users [default: both].")
@click.option("--ranker", type=click.Choice(RANKERS), help="Override the default pipeline's ranker.")
@click.option("--phase", type=click.Choice(["test", "validation"]), default="test",
              help="test: fit on train+validation, score test; validation: fit on train, score validation.")
@click.option("-k", "cutoff", type=click.IntRange(1, 50), default=10, help="Cut-off of the table.")
@click.option("--ease-l2", type=click.FloatRange(0, min_open=True), default=None,
              help="EASE's L2 weight [default: chosen by `tune`, else 500].")
@click.option("--original-users", type=click.IntRange(1), default=200,
              help="Users sampled for the original-protocol rows.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every number and the protocol as JSON.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write evaluation.md, curves.png (random) and temporal.png (P@k, warm and cold users) "
                   "into this directory.")
@click.option("--download", is_flag=True, envvar="RECSYS_DOWNLOAD", help=DOWNLOAD_HELP)
@click.pass_context
@fail_cleanly
def evaluate(ctx, params_file, protocols, ranker, phase, cutoff, ease_l2, original_users, json_path,
             report_dir, download):
    """Compare the pipeline with baselines on the random split and on a time split (warm and cold users).

    \b
    Example:
      recsys-batch evaluate --data-dir /path/to/ml-1m --json data/eval/evaluation.json --report data/eval
    """
    from batch.evaluation.evaluate import DEFAULT_EASE_L2, PROTOCOLS, evaluate_protocols
    from batch.evaluation.report import format_table, write_report

    params = load_params(params_file).with_(ranker=ranker)
    baselines = tuned_document(params_file).get("baselines", {})
    if ease_l2 is None:
        ease_l2 = float(baselines.get("ease_l2", DEFAULT_EASE_L2))
    ratings, movies, provenance = _load(ctx.obj, download)
    report = evaluate_protocols(ratings, movies, params, tuple(protocols) or PROTOCOLS, ease_l2=ease_l2,
                                als_pop=baselines.get("als_pop"), phase=phase, original_users=original_users)
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


@click.command(short_help="Search the model parameters on validation; write the tuned file.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=TUNED_PATH,
              show_default="batch/tuned_params.json",
              help="Where to write the tuned parameters (`run` and `evaluate` read the default path).")
@click.option("--protocol", type=click.Choice(["random", "temporal"]), default="random",
              help="random: the full search on the 60/20/20 split; temporal: refine the file at --output "
                   "(fallback list, blend, ALS + popularity weight) on the time split's validation phase.")
@click.option("--quick", is_flag=True, help="A tiny search space (smoke tests), not for real use.")
@click.option("--seed", type=int, default=42, help="Seed of the split and of the models.")
@click.option("--download", is_flag=True, envvar="RECSYS_DOWNLOAD", help=DOWNLOAD_HELP)
@click.pass_context
@fail_cleanly
def tune(ctx, output, protocol, quick, seed, download):
    """Search ALS, SVD, candidate counts and the ranking blend on validation; write the tuned file.

    Fits on the train part and scores the validation part only: test is never read.
    The committed file comes from `tune` then `tune --protocol temporal`.

    \b
    Example:
      recsys-batch tune --data-dir /path/to/ml-1m              # writes batch/tuned_params.json
      recsys-batch tune --data-dir /path/to/ml-1m --protocol temporal
      recsys-batch tune --data-dir /path/to/ml-1m --output data/tuned.json
    """
    from batch.evaluation.tuning import SMALL, SearchSpace, write_tuned
    from batch.evaluation.tuning import tune as run_tune

    ratings, movies, provenance = _load(ctx.obj, download)
    started = time.perf_counter()
    if protocol == "temporal":
        return _tune_temporal(ctx, output, ratings, movies, provenance, seed, quick, started)
    doc = run_tune(ratings, movies, space=SMALL if quick else SearchSpace(), seed=seed)
    doc = {"version": doc.pop("version"), "created_at": doc.pop("created_at"),
           "command": _command_line(ctx), **provenance, **doc}
    path = write_tuned(doc, output)
    for name, value in doc["validation"].items():
        click.echo(f"validation {name}: {value}")
    defaults = Params().to_dict()
    changed = {k: v for k, v in doc["params"].items() if defaults[k] != v}
    click.echo(f"chosen (changes from the built-in defaults): {json.dumps(changed)}")
    click.echo(f"EASE l2: {doc['baselines']['ease_l2']:g}; {len(doc['trials'])} trials in "
               f"{time.perf_counter() - started:.0f}s; written to {path}")


def _tune_temporal(ctx, output: Path, ratings, movies, provenance: dict, seed: int, quick: bool,
                   started: float) -> None:
    """Refine the tuned file at ``output`` on the temporal validation phase and write it back."""
    from batch.evaluation.evaluate import DEFAULT_EASE_L2
    from batch.evaluation.tune_temporal import BLENDS, tune_temporal
    from batch.evaluation.tuning import write_tuned

    doc = tuned_document(output) if output.exists() else {}
    base = Params.from_dict(doc.get("params", {})).with_(seed=seed)
    ease_l2 = float(doc.get("baselines", {}).get("ease_l2", DEFAULT_EASE_L2))
    section = tune_temporal(ratings, movies, base, ease_l2, seed=seed, blends=BLENDS[:4] if quick else BLENDS)
    section = {"command": _command_line(ctx), "code_version": provenance["code_version"], **section}
    doc = {"version": 1, **doc, "params": base.with_(**section["chosen"]).to_dict(),
           "baselines": {**doc.get("baselines", {"ease_l2": ease_l2}), "als_pop": section["als_pop"]},
           "temporal": section}
    path = write_tuned(doc, output)
    click.echo(f"chosen on temporal validation: {json.dumps(section['chosen'])}; "
               f"ALS + popularity weight {section['als_pop']:g}")
    for name, value in section["validation"].items():
        click.echo(f"validation {name}: {value}")
    click.echo(f"{len(section['trials'])} trials in {time.perf_counter() - started:.0f}s; written to {path}")
