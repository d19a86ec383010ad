"""Candidate sources and scorers, one shape each (:mod:`batch.models.base`).

``SOURCES`` maps a model name to its module: ``module.fit(data, [genres,] **params.kwargs(name))``
fits it (``content`` also takes the item genres), so every setting comes from :class:`Params`.
"""

from __future__ import annotations

import importlib

SOURCES = ("als", "ease", "content", "popularity", "knn", "svd")


def fit_source(name: str, data, params, genres: list[list[str]] | None = None, **runtime):
    """Fit model ``name`` on ``data`` (an :class:`~batch.interactions.Interactions`) with ``params``.

    ``runtime``: arguments that are not settings (e.g. ALS's ``threads``).
    """
    if name not in SOURCES:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(SOURCES)}")
    module = importlib.import_module(f"batch.models.{name}")
    args = (data, genres) if name == "content" else (data,)
    return module.fit(*args, **params.kwargs(name), **runtime)
