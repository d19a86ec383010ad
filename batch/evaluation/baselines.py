"""Top-K lists of every evaluated row, each (len(users), k) item indices, unseen, best first."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from batch import pipeline
from batch.interactions import Interactions
from batch.models.ease import EASEModel
from batch.models.popularity import popularity_scores
from batch.models.topn import chunked_top_n
from batch.params import Params


def global_ranking(scores: np.ndarray, seen: sp.csr_matrix, users: np.ndarray, k: int) -> np.ndarray:
    """Recommend the same item order (``scores``, (n_items,)) to every user, minus what they rated."""
    row = np.asarray(scores, dtype=np.float32)[None, :]
    ids, _ = chunked_top_n(lambda batch: np.repeat(row, len(batch), axis=0), users, seen, k)
    return ids


def most_rated(data: Interactions, users: np.ndarray, k: int) -> np.ndarray:
    """Movies by number of ratings."""
    return global_ranking(popularity_scores(data.matrix, "count"), data.matrix, users, k)


def content_only(models: pipeline.Models, data: Interactions, users: np.ndarray, k: int,
                 params: Params) -> np.ndarray:
    """TF-IDF genre similarity to the user's liked movies alone."""
    liked = data.liked(params.like_threshold)
    return models.content.recommend(liked, data.matrix, users, k)[0]


def als_only(models: pipeline.Models, data: Interactions, users: np.ndarray, k: int) -> np.ndarray:
    """ALS scores alone over the full catalogue."""
    return models.als.recommend(users, data.matrix, k)[0]


def svd_full(models: pipeline.Models, data: Interactions, users: np.ndarray, k: int) -> np.ndarray:
    """SVD's predicted rating over the full catalogue (no candidate stage)."""
    return chunked_top_n(models.svd.score_all, users, data.matrix, k)[0]


def ease(model: EASEModel, data: Interactions, users: np.ndarray, k: int) -> np.ndarray:
    """EASE item-item scores over the full catalogue."""
    return model.recommend(users, data.matrix, k)[0]


def two_stage(models: pipeline.Models, data: Interactions, users: np.ndarray, k: int, params: Params,
              exclude_seen: bool = True) -> np.ndarray:
    """The two-stage pipeline (candidates, then the configured ranker), cut at ``k``."""
    cands = pipeline.candidates(models, data, users, params, exclude_seen=exclude_seen)
    return pipeline.rank(models, users, cands, params.with_(top_n=k)).items


def als_popularity(models: pipeline.Models, data: Interactions, users: np.ndarray, k: int,
                   weight: float) -> np.ndarray:
    """ALS with a log-popularity term: log max(ALS score, 1e-3) + ``weight`` * log1p(#ratings >= 4)."""
    liked = popularity_scores(data.matrix, "liked")  # the number of ratings >= 4 of every item
    pop = (weight * np.log1p(liked)).astype(np.float32)[None, :]
    factors = models.als.item_factors.T

    def score(batch: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(models.als.user_factors[batch] @ factors, pipeline.ALS_FLOOR)) + pop

    return chunked_top_n(score, users, data.matrix, k)[0]
