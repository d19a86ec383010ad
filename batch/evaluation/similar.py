""""More like this" on the temporal protocol: a next-item task, the item-item model chosen on validation.

For each warm user (rated before the cut, a liked movie held out after it) take their last
``seeds`` liked fitted movies; the recommended list is the union of those movies' similar lists
(each candidate scored by its summed similarity to the seeds), minus every movie the user rated,
top ``k``.  How many of the user's liked held-out movies does it recover (P@10, recall@10,
NDCG@10, hit rate)?  Compared on the same users: the genre-only list (TF-IDF cosine) and the
popular list (the product's popular rule, minus the user's movies).

Candidates, each a blend of :mod:`batch.related`'s signals: co-occurrence of likes (shrinkage
grid), ALS item factors (the tuned ALS settings), an EASE-like item-item matrix (dense: fine for
ML-1M's 3.7k movies, not for ML-25M's 55k, so it is a reference row, never chosen), each alone and
with a genre TF-IDF weight.  Chosen by NDCG@10 on validation; the test phase reports every row.
:func:`similar_rows` returns the table's rows; :func:`table` formats them as Markdown.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from batch import pipeline
from batch.evaluation.metrics import ranking_curves
from batch.evaluation.protocol import fold_for
from batch.evaluation.split import Fold
from batch.evaluation.temporal import split_by_time
from batch.models import fit_source
from batch.models.popularity import top_popular
from batch.movielens import Movies, Ratings
from batch.params import Params
from batch.related import similar_items, tfidf_genres

log = logging.getLogger(__name__)

K = 10  # list length scored
NEIGHBOURS = 50  # similar items kept per movie (the stored list's length in the product: 20 + 50 spare)
SEEDS = 3  # last liked fitted movies per user
GENRE_WEIGHTS = (0.0, 0.001, 0.02, 0.1)
SHRINKS = (0.0, 50.0, 200.0, 1000.0)


def last_liked(data, threshold: float, seeds: int) -> list[np.ndarray]:
    """Return each user's last ``seeds`` liked movies (column indices, by rating time)."""
    m = data.matrix
    out = []
    for u in range(data.n_users):
        lo, hi = m.indptr[u], m.indptr[u + 1]
        liked = np.flatnonzero(m.data[lo:hi] >= threshold)
        if data.times is not None and len(liked):
            liked = liked[np.argsort(data.times[lo:hi][liked], kind="stable")]
        out.append(m.indices[lo:hi][liked[-seeds:]])
    return out


def next_item_lists(neighbours: np.ndarray, scores: np.ndarray, seeds: list[np.ndarray],
                    seen: sp.csr_matrix, users: np.ndarray, k: int = K) -> np.ndarray:
    """Return (len(users), k) lists: the seeds' similar items by summed similarity, unseen, -1 padded."""
    n_items = neighbours.shape[0]
    out = np.full((len(users), k), -1, dtype=np.int64)
    for row, u in enumerate(users):
        s = seeds[u]
        if not len(s):
            continue
        cand, sim = neighbours[s].ravel(), scores[s].ravel()
        keep = cand >= 0
        total = np.bincount(cand[keep], weights=sim[keep], minlength=n_items)
        total[seen.indices[seen.indptr[u]: seen.indptr[u + 1]]] = 0
        top = np.flatnonzero(total > 0)
        top = top[np.argsort(-total[top], kind="stable")][:k]
        out[row, : len(top)] = top
    return out


def popular_lists(popularity: np.ndarray, seen: sp.csr_matrix, users: np.ndarray, k: int = K) -> np.ndarray:
    """Return the popular list minus each user's movies, (len(users), k)."""
    order, _ = top_popular(popularity, k + int(np.diff(seen.indptr).max(initial=0)))
    out = np.full((len(users), k), -1, dtype=np.int64)
    for row, u in enumerate(users):
        rated = set(seen.indices[seen.indptr[u]: seen.indptr[u + 1]].tolist())
        picked = [i for i in order.tolist() if i not in rated][:k]
        out[row, : len(picked)] = picked
    return out


def _ease_similarity(likes: sp.csr_matrix, l2: float = 500.0) -> np.ndarray:
    gram = (likes.T @ likes).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    b = p / (-np.diag(p))
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def _top_of_dense(sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sim = sim.copy()
    np.fill_diagonal(sim, -np.inf)
    sim[sim <= 0] = -np.inf
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(sim, top, axis=1)
    return np.where(np.isfinite(scores), top, -1), scores


def candidates(fold: Fold, movies: Movies, params: Params) -> dict[str, dict]:
    """Return the candidate settings: name -> similar_items keyword arguments (or an EASE marker)."""
    als = fit_source("als", fold.data, params)
    out: dict[str, dict] = {"genre-only": {"weights": {"genres": 1.0}}}
    for shrink in SHRINKS:
        for g in GENRE_WEIGHTS:
            out[f"co-occurrence (shrink {shrink:g}) + genre {g:g}"] = {
                "weights": {"likes": 1.0, "genres": g}, "shrink": shrink}
    for g in GENRE_WEIGHTS:
        out[f"ALS item factors + genre {g:g}"] = {"weights": {"factors": 1.0, "genres": g},
                                                 "factors": als.item_factors}
    out["co-occurrence (shrink 200) + ALS 0.3"] = {
        "weights": {"likes": 1.0, "factors": 0.3}, "shrink": 200.0, "factors": als.item_factors}
    out["EASE-like item-item (dense; reference only)"] = {"ease": True}
    return out


def evaluate_phase(ratings: Ratings, movies: Movies, params: Params, phase: str, split=None,
                   only: set[str] | None = None) -> list[dict]:
    """Score every candidate (or those named in ``only``) and both baselines on one phase."""
    split = split or split_by_time(ratings)
    fold = fold_for(ratings, split, phase, params.like_threshold)
    data = fold.data
    users = fold.users()
    seeds = last_liked(data, params.like_threshold, SEEDS)
    users = users[np.array([len(seeds[u]) > 0 for u in users], dtype=bool)] if len(users) else users
    relevant, n_rel = fold.relevant()[users], fold.n_relevant[users]
    seen = data.matrix
    likes = data.liked(params.like_threshold)
    genres = tfidf_genres(pipeline.item_genres(data, movies))
    counts = np.diff(sp.csc_matrix(data.matrix).indptr).astype(np.float64)
    prior = counts / max(counts.max(), 1.0) * 0.999
    rows = []

    def add(name: str, recs: np.ndarray, seconds: float, chosen_from: str = "candidate") -> None:
        curves = ranking_curves(recs, relevant, n_rel, data.n_items)
        rows.append({"phase": phase, "model": name, "kind": chosen_from, "users": len(users),
                     **{f"{m}@{K}": round(float(curves[m][K - 1]), 4)
                        for m in ("precision", "recall", "ndcg", "hit_rate", "coverage")},
                     "seconds": round(seconds, 2)})

    started = time.perf_counter()
    popularity = fit_source("popularity", data, params).scores
    add("popular list (baseline)", popular_lists(popularity, seen, users), time.perf_counter() - started,
        "baseline")
    for name, kwargs in candidates(fold, movies, params).items():
        if only is not None and name not in only and name != "genre-only":
            continue
        started = time.perf_counter()
        if kwargs.get("ease"):
            neighbours, scores = _top_of_dense(_ease_similarity(likes), NEIGHBOURS)
        else:
            neighbours, scores = similar_items(data.n_items, NEIGHBOURS, likes=likes, genres=genres,
                                               prior=prior, **kwargs)
        recs = next_item_lists(neighbours, scores, seeds, seen, users)
        add(name if name != "genre-only" else "genre-only TF-IDF (baseline)", recs,
            time.perf_counter() - started, "baseline" if name == "genre-only" else "candidate")
    return rows


def similar_rows(ratings: Ratings, movies: Movies, params: Params) -> list[dict]:
    """Return the "more like this" table: every row on validation, the chosen one marked, then the
    baselines, the chosen model and the other families' best on test."""
    split = split_by_time(ratings)
    validation = evaluate_phase(ratings, movies, params, "validation", split)
    pool = [r for r in validation if r["kind"] == "candidate" and "reference" not in r["model"]]
    chosen = max(pool, key=lambda r: (r["ndcg@10"], r["recall@10"]))
    chosen["kind"] = "chosen"
    families = {}
    for r in validation:
        family = r["model"].split(" (")[0].split(" +")[0]
        if r["kind"] != "baseline" and (family not in families or r["ndcg@10"] > families[family]["ndcg@10"]):
            families[family] = r
    picked = {chosen["model"], *(r["model"] for r in families.values())}
    test = evaluate_phase(ratings, movies, params, "test", split, only=picked)
    for r in test:
        r["kind"] = "chosen" if r["model"] == chosen["model"] else r["kind"]
    return validation + test


def table(rows: list[dict]) -> str:
    """Return the rows as a Markdown table."""
    head = ["phase", "model", "kind", "users", "precision@10", "recall@10", "ndcg@10", "hit_rate@10",
            "coverage@10"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - run by hand: python -m batch.evaluation.similar DATA_DIR
    import sys

    from batch.movielens_ratings import load_dir

    logging.basicConfig(level=logging.INFO)
    ratings, movies = load_dir(sys.argv[1])
    from batch.params import load_params

    print(table(similar_rows(ratings, movies, load_params())))


if __name__ == "__main__":  # pragma: no cover
    main()
