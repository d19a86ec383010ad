"""What both protocols share: the fitted and held-out parts of a phase, fitted models cached per
configuration (rows share ALS and SVD fits), and scores in the reports' form (curves, rating errors).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from batch import pipeline
from batch.evaluation.metrics import ranking_curves, rating_errors
from batch.evaluation.split import Fold, Split, make_fold
from batch.models import fit_source
from batch.models.svd import SVDModel
from batch.movielens import Movies, Ratings
from batch.params import Params, group_names

log = logging.getLogger(__name__)

ALS_KEYS = group_names("als")  # every setting train_als receives: a model fitted without one is never reused
SVD_KEYS = group_names("svd")


def phase_parts(split: Split, phase: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (fitted, held-out) positions: ``validation`` fits train and holds out validation;
    ``test`` fits train + validation and holds out test."""
    if phase == "validation":
        return split.train, split.validation
    if phase == "test":
        return np.concatenate([split.train, split.validation]), split.test
    raise ValueError(f"unknown phase {phase!r}; choose validation or test")


def fold_for(ratings: Ratings, split: Split, phase: str, threshold: float = 4.0) -> Fold:
    """``validation``: fit on train, score validation; ``test``: fit on train + validation, score test."""
    return make_fold(ratings, *phase_parts(split, phase), threshold)


@dataclass
class ModelCache:
    """Fit each distinct model configuration once on ``fold`` (:meth:`pipeline.Models.fit`'s cache)."""

    fold: Fold
    movies: Movies
    timings: dict[str, float] = field(default_factory=dict)
    fitted: dict = field(default_factory=dict)

    def timed(self, name: str, fit):
        """Call ``fit()`` and add its wall time to ``timings[name]``."""
        started = time.perf_counter()
        result = fit()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started
        return result

    def source(self, name: str, params: Params):
        """Return model ``name`` fitted with ``params``' settings (once per configuration)."""
        key = pipeline.model_key(name, params)
        if key not in self.fitted:
            genres = pipeline.item_genres(self.fold.data, self.movies) if name == "content" else None
            self.fitted[key] = self.timed(f"fit_{name}", lambda: fit_source(name, self.fold.data, params,
                                                                            genres))
        return self.fitted[key]

    def svd(self, params: Params) -> SVDModel:
        """Return SVD fitted with ``params``' SVD settings."""
        return self.source("svd", params)

    def models(self, params: Params) -> pipeline.Models:
        """Return the pipeline's models for ``params`` (each model fitted at most once per config)."""
        return self.timed("fit_pipeline", lambda: pipeline.Models.fit(self.fold.data, self.movies, params,
                                                                      cache=self.fitted))


def pad(recs: np.ndarray, k: int) -> np.ndarray:
    """Cut or pad (with -1) ``recs`` to exactly ``k`` columns."""
    if recs.shape[1] >= k:
        return recs[:, :k]
    return np.pad(recs, ((0, 0), (0, k - recs.shape[1])), constant_values=-1)


def rounded_curves(recs: np.ndarray, relevant, n_relevant: np.ndarray, n_items: int) -> dict[str, list]:
    """Return :func:`ranking_curves` as JSON-ready lists rounded to 6 decimals (the reports' form)."""
    curves = ranking_curves(recs, relevant, n_relevant, n_items)
    return {name: [round(float(v), 6) for v in values] for name, values in curves.items()}


def score_lists(fold: Fold, users: np.ndarray, recs: np.ndarray, k: int) -> dict[str, list[float]]:
    """Return the metric curves (k = 1..``k``) of ``recs`` for ``users`` (fold row indices)."""
    return rounded_curves(pad(recs, k), fold.relevant()[users], fold.n_relevant[users], fold.data.n_items)


def svd_errors(fold: Fold, svd: SVDModel) -> dict[str, float]:
    """RMSE and MAE of SVD's clipped predictions on every held-out rating (mu + bu for unseen movies)."""
    held = fold.heldout.tocoo()
    known = svd.score(held.row, held.col[:, None], clip=True)[:, 0]
    cold = np.clip(svd.mu + svd.bu[fold.cold_users], *svd.rating_scale)
    return rating_errors(np.concatenate([known, cold]), np.concatenate([held.data, fold.cold_ratings]))


def sample_users(users: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Return ``n`` of ``users`` drawn without replacement (all when there are fewer), sorted."""
    if n >= len(users):
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=n, replace=False))
