"""Item features the blend can use besides the models' scores: freshness and release year.

``fresh`` = -log(1 + age in days), the age counted from the item's first rating in the fitted data
to just after its newest rating (new releases are young: they gather likes faster than their
rating count says); ``year`` = the release year in the title, ``"Title (1995)"`` (the median
year when the title has none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from batch.interactions import Interactions

DAY = 86400.0
YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass
class ItemFeatures:
    """``fresh`` and ``year``, (n_items,) float32 each, aligned with the fitted columns."""

    fresh: np.ndarray
    year: np.ndarray


def release_years(titles: list[str]) -> np.ndarray:
    """The year in each title's trailing ``(YYYY)``; NaN when absent."""
    years = [YEAR.search(t or "") for t in titles]
    return np.array([float(m.group(1)) if m else np.nan for m in years])


def fit(data: Interactions, titles: list[str]) -> ItemFeatures:
    """Compute the features of ``data``'s columns (``titles``: one per column)."""
    n = data.n_items
    if data.times is not None and data.nnz:
        times = np.asarray(data.times, dtype=np.float64)
        first = np.full(n, np.inf)
        np.minimum.at(first, data.matrix.indices, times)
        age = (times.max() + 1.0 - np.where(np.isfinite(first), first, times.min())) / DAY
        fresh = -np.log1p(np.maximum(age, 0.0))
    else:  # e.g. no timestamps: no item is fresher than another
        fresh = np.zeros(n)
    years = release_years(titles)
    known = np.isfinite(years)
    years = np.where(known, years, np.median(years[known]) if known.any() else 0.0)
    return ItemFeatures(fresh.astype(np.float32), years.astype(np.float32))
