"""``recsys-batch hide``, ``unhide``, ``hidden``: take titles down now, without a rerun.

The hidden titles are one Redis hash, ``<prefix>:hidden`` (movie id -> reason and time), that
belongs to no run.  Every API worker re-reads it at most once a second and drops those titles from
every list it serves (stale answers too); the next ``run`` leaves them out of what it publishes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from batch.cli.common import JSON, Context
from lookup_api.contract.keys import MAX_ID

MOVIE_IDS = click.argument("movie_ids", nargs=-1, required=True, type=click.IntRange(1, MAX_ID))


@click.command(short_help="Hide titles from every list the API serves (no rerun).")
@MOVIE_IDS
@click.option("--reason", default="", help="Why (licence expired, legal request ...), shown by `hidden`.")
@click.pass_obj
def hide(obj: Context, movie_ids, reason):
    """Hide MOVIE_ID... from every list the API serves, within about a second; the next run
    publishes them nowhere.

    \b
    Example:
      recsys-batch hide 2858 1196 --reason "licence expired"
    """
    added = obj.store().hide(movie_ids, reason)
    click.echo(f"hidden: {len(set(movie_ids))} title(s) ({added} new); the API drops them within ~1 s")


@click.command(short_help="Serve hidden titles again.")
@MOVIE_IDS
@click.pass_obj
def unhide(obj: Context, movie_ids):
    """Serve MOVIE_ID... again (the live run's lists still hold them if it was published before
    they were hidden; otherwise from the next run).

    \b
    Example:
      recsys-batch unhide 2858
    """
    removed = obj.store().unhide(movie_ids)
    click.echo(f"unhidden: {removed} of {len(set(movie_ids))} title(s) were hidden")


@click.command("hidden", short_help="List the hidden titles, with reasons and times.")
@JSON
@click.pass_obj
def hidden_cmd(obj: Context, as_json):
    """List the hidden titles with their reasons and when they were hidden.

    \b
    Example:
      recsys-batch hidden
    """
    entries = obj.store(create=False).hidden()
    if as_json:
        click.echo(json.dumps({str(m): e for m, e in entries.items()}, indent=2))
        return
    if not entries:
        click.echo("no hidden titles")
        return
    for movie_id, entry in entries.items():
        at = entry.get("at")
        when = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds") if at else "?"
        click.echo(f"{movie_id:>8}  {when}  {entry.get('reason') or '-'}")


COMMANDS = (hide, unhide, hidden_cmd)
