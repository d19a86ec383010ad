"""``run``'s model options, generated from the declarations in :mod:`batch.params` (one per setting)."""

from __future__ import annotations

from dataclasses import MISSING, Field

import click

from batch.params import declared


def _type(f: Field) -> click.ParamType:
    meta = f.metadata
    if meta["choices"] is not None:
        return click.Choice(meta["choices"])
    bounded = meta["min"] is not None or meta["max"] is not None
    if f.type == "int":
        return click.IntRange(meta["min"], meta["max"], min_open=meta["min_open"]) if bounded else click.INT
    return click.FloatRange(meta["min"], meta["max"], min_open=meta["min_open"]) if bounded else click.FLOAT


def param_option(f: Field | str):
    """Return the option of one setting (unset: the tuned file's value, else the built-in default)."""
    if isinstance(f, str):
        f = next(field for field in declared() if field.name == f)
    default = f.default if f.default is not MISSING else None
    option = "--" + f.name.replace("_", "-")  # als_factors -> --als-factors
    return click.option(option, f.name, type=_type(f), default=None, show_default=False,
                        help=f"{f.metadata['help']} [default: tuned file, else {default}]")


def param_options(func):
    """Add one option per declared setting."""
    for f in reversed(declared()):
        func = param_option(f)(func)
    return func
