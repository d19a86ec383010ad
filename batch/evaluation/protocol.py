"""What both protocols share: the split and phase of a protocol, fitted models cached per
configuration (rows and trials share fits), the lists of one recipe, and SVD's rating errors.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from batch import pipeline
from batch.evaluation.metrics import rating_errors
from batch.evaluation.split import Fold, Split, make_fold, split_ratings
from batch.evaluation.temporal import ColdUsers, cold_users, split_by_time
from batch.models import fit_source
from batch.models.svd import SVDModel
from batch.movielens import Movies, Ratings
from batch.params import Params

log = logging.getLogger(__name__)

PROTOCOLS = ("random", "temporal")


def phase_parts(split: Split, phase: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (fitted, held-out) positions: ``validation`` fits train and holds out validation;
    ``test`` fits train + validation and holds out test."""
    if phase == "validation":
        return split.train, split.validation
    if phase == "test":
        return np.concatenate([split.train, split.validation]), split.test
    raise ValueError(f"unknown phase {phase!r}; choose validation or test")


def split_for(ratings: Ratings, protocol: str, seed: int = 42) -> Split:
    """``random``: the original 60/20/20 split by user; ``temporal``: one global cut by time."""
    if protocol == "random":
        return split_ratings(ratings, seed=seed)
    if protocol == "temporal":
        return split_by_time(ratings)
    raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def fold_for(ratings: Ratings, split: Split, phase: str, threshold: float = 4.0) -> Fold:
    """``validation``: fit on train, score validation; ``test``: fit on train + validation, score test."""
    return make_fold(ratings, *phase_parts(split, phase), threshold)


@dataclass
class Phase:
    """One protocol's phase: the fold (warm users), its cold users (temporal) and a model cache."""

    protocol: str
    name: str
    split: Split
    fold: Fold
    cold: ColdUsers | None
    cache: ModelCache

    @classmethod
    def of(cls, ratings: Ratings, movies: Movies, protocol: str, phase: str, seed: int = 42) -> Phase:
        split = split_for(ratings, protocol, seed)
        fold = fold_for(ratings, split, phase)
        cold = (cold_users(fold.data, ratings.take(phase_parts(split, phase)[1]))
                if protocol == "temporal" else None)
        return cls(protocol, phase, split, fold, cold, ModelCache(fold, movies))


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

    def forget(self, name: str, params: Params) -> None:
        """Drop model ``name`` fitted with ``params`` (a trial's model that nothing else will use)."""
        self.fitted.pop(pipeline.model_key(name, params), None)

    def models(self, params: Params) -> pipeline.Models:
        """Return the pipeline's models for ``params`` (each model fitted at most once per config)."""
        return self.timed("fit_pipeline", lambda: pipeline.Models.fit(self.fold.data, self.movies, params,
                                                                      cache=self.fitted))

    def lists(self, model: str, params: Params, users: np.ndarray, k: int,
              exclude_seen: bool = True) -> np.ndarray:
        """Top-``k`` ids of ``users`` from one model (a name in :data:`batch.models.SOURCES`) or from the
        whole ``pipeline``; ``exclude_seen=False`` keeps fitted movies (the original protocol only)."""
        data = self.fold.data
        if model == "pipeline":
            models = self.models(params)
            cands = pipeline.candidates(models, data, users, params, exclude_seen=exclude_seen)
            return pipeline.rank(models, users, cands, params.with_(top_n=k)).items
        return self.source(model, params).recommend(users, data.matrix if exclude_seen else None, k)[0]


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
