"""``run``'s model options, generated from the declarations in :mod:`batch.params` (one per setting)."""

from __future__ import annotations

from dataclasses import MISSING, Field

import click

from batch.params import TUNED_PATH, declared, tuned_document


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

    def get_help_extra(self, ctx: click.Context):
        """Read the tuned file now, so ``[default: ...]`` is the value a run would use."""
        try:
            tuned = tuned_document().get("params", {})
        except ValueError:  # an unreadable file: run says why
            tuned = {}
        extra = super().get_help_extra(ctx)
        extra["default"] = f"{tuned[self.name]} ({TUNED_PATH.name})" if self.name in tuned else str(self.builtin)
        return extra


def param_option(f: Field | str):
    """Return the option of one setting (unset: the tuned file's value, else the built-in default)."""
    if isinstance(f, str):
        f = next(field for field in declared() if field.name == f)
    option = "--" + f.name.replace("_", "-")  # als_factors -> --als-factors
    decorator = click.option(option, f.name, cls=TunedOption, type=_type(f), default=None,
                             help=f.metadata["help"])

    def apply(func):
        func = decorator(func)
        params = func.params if isinstance(func, click.Command) else func.__click_params__
        params[-1].builtin = f.default if f.default is not MISSING else None
        return func

    return apply


def param_options(func):
    """Add one option per declared setting."""
    for f in reversed(declared()):
        func = param_option(f)(func)
    return func
