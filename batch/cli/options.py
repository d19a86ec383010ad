"""The options of ``run`` that the sharded steps share, and the model options generated from
:mod:`batch.params` (one per setting)."""

from __future__ import annotations

from dataclasses import MISSING, Field
from pathlib import Path

import click

from batch.params import TUNED_PATH, declared, tuned_document
from lookup_api.contract.keys import DEFAULT_KEEP

PARAMS_FILE = click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path),
                           help=f"Parameter file written by `tune`: the pipeline's and the baselines' "
                                f"[default: {TUNED_PATH.name} in the batch package, else built-in defaults].")
DATASET_URL = click.option("--dataset-url", envvar="RECSYS_DATASET_URL", help="Mirror of the release's zip "
                           "(checksums are still verified). [env: RECSYS_DATASET_URL]")
ALLOW_EVICTION = click.option("--allow-eviction", is_flag=True, envvar="RECSYS_ALLOW_EVICTION",
                              help="Publish to a Redis whose maxmemory-policy may evict keys (allkeys-*); "
                                   "users whose list is evicted get the popular list. [env: "
                                   "RECSYS_ALLOW_EVICTION]")
DOWNLOAD = click.option("--download", is_flag=True, envvar="RECSYS_DOWNLOAD",
                        help="Download the dataset into --data-dir if it is not there (the default data "
                             "directory is always downloaded into). [env: RECSYS_DOWNLOAD]")
KEEP = click.option("--keep", type=click.IntRange(1, 100), default=DEFAULT_KEEP,
                    help="Complete runs to keep in Redis (older ones are deleted).")
FORCE = click.option("--force", is_flag=True, help="Publish even a run the publish gate refuses (far fewer "
                     "users, movies or ratings than the live run, an empty list); the reasons are recorded "
                     "in its meta.")


def _type(f: Field) -> click.ParamType:
    meta = f.metadata
    if meta["choices"] is not None:
        return click.Choice(meta["choices"])
    bounded = meta["min"] is not None or meta["max"] is not None
    if f.type == "int":
        return click.IntRange(meta["min"], meta["max"], min_open=meta["min_open"]) if bounded else click.INT
    return click.FloatRange(meta["min"], meta["max"], min_open=meta["min_open"]) if bounded else click.FLOAT


class TunedOption(click.Option):
    """A setting's option: unset, the tuned file's value, else the built-in default; --help shows which."""

    def __init__(self, *args, builtin=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.builtin = builtin

    def get_help_extra(self, ctx: click.Context):
        """Read the tuned file now, so ``[default: ...]`` is the value a run would use."""
        try:
            tuned = tuned_document().get("params", {})
        except ValueError:  # an unreadable file: run says why
            tuned = {}
        extra = super().get_help_extra(ctx)
        name = self.name
        extra["default"] = f"{tuned[name]} ({TUNED_PATH.name})" if name in tuned else str(self.builtin)
        return extra


def param_option(f: Field | str):
    """Return the option of one setting (unset: the tuned file's value, else the built-in default)."""
    if isinstance(f, str):
        f = next(field for field in declared() if field.name == f)
    option = "--" + f.name.replace("_", "-")  # als_factors -> --als-factors
    return click.option(option, f.name, cls=TunedOption, type=_type(f), default=None, help=f.metadata["help"],
                        builtin=f.default if f.default is not MISSING else None)


def param_options(func):
    """Add one option per declared setting."""
    for f in reversed(declared()):
        func = param_option(f)(func)
    return func
