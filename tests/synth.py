"""Small generated MovieLens-format datasets with known answers (for fast tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENRES = ["Action", "Comedy", "Drama", "Horror"]


def checkerboard(n_users: int = 40, n_items: int = 24, seed: int = 0):
    """Two taste groups: even users love the first half of the items, odd users the second.

    Every user rates all items of their half with 4-5 stars, except one withheld item,
    and rates two items of the other half with 1 star.  Returns (ratings rows, movies rows,
    withheld {user_id: movie_id}).  Ids are 1-based like MovieLens; movie ids are spaced
    (10, 20, ...) so that index and id can never be confused.
    """
    rng = np.random.default_rng(seed)
    half = n_items // 2
    movies = []
    for i in range(n_items):
        group = 0 if i < half else 1
        genres = [GENRES[group * 2], GENRES[group * 2 + 1]] if i % 3 else [GENRES[group * 2]]
        movies.append((10 * (i + 1), f"Movie {i + 1} (199{i % 10})", genres))
    ratings, withheld = [], {}
    for u in range(n_users):
        user_id = u + 1
        own = np.arange(half) if u % 2 == 0 else np.arange(half, n_items)
        other = np.arange(half, n_items) if u % 2 == 0 else np.arange(half)
        hold = own[u % len(own)]
        withheld[user_id] = 10 * (hold + 1)
        for i in own:
            if i != hold:
                ratings.append((user_id, 10 * (i + 1), int(rng.integers(4, 6)), 978300000 + len(ratings)))
        for i in rng.choice(other, size=2, replace=False):
            ratings.append((user_id, 10 * (i + 1), 1, 978300000 + len(ratings)))
    return ratings, movies, withheld


def write_dataset(directory: Path, ratings, movies) -> Path:
    """Write ``ratings.dat`` and ``movies.dat`` (latin-1, ``::``) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "movies.dat").write_bytes(
        "".join(f"{m}::{t}::{'|'.join(g)}\n" for m, t, g in movies).encode("latin-1")
    )
    (directory / "ratings.dat").write_bytes(
        "".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in ratings).encode("latin-1")
    )
    return directory


def random_dataset(n_users: int = 300, n_items: int = 120, per_user: int = 25, seed: int = 1):
    """A random ML-shaped dataset (popularity-skewed items, 1-5 stars, latin-1 titles)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.75
    weights /= weights.sum()
    movies = [
        (i + 1, f"Film {i + 1}{' Café' if i % 7 == 0 else ''} (19{60 + i % 40})",
         sorted({GENRES[i % 4], GENRES[(i * 7) % 4]}))
        for i in range(n_items)
    ]
    ratings = []
    for u in range(n_users):
        items = rng.choice(n_items, size=min(per_user, n_items), replace=False, p=weights)
        taste = rng.normal(size=4)
        for i in items:
            base = 3 + taste[i % 4] + rng.normal(scale=0.7)
            ratings.append((u + 1, int(i) + 1, int(np.clip(round(base), 1, 5)), 978300000 + len(ratings)))
    return ratings, movies


def ml1m_like(user_scale: float = 1.0, item_scale: float = 1.0, seed: int = 0, *, half_stars: bool = False,
              user_counts: tuple[float, float, int] = (140, 0.95, 24), item_sigma: float | None = None):
    """Generate ML-1M-shaped data: (Ratings, Movies) with 6,040 x ``user_scale`` users.

    Matches ML-1M's shape: per-user rating counts log-normal with a floor of 20 (median ~96,
    mean ~165), item popularity Zipf-like over 3,706 x ``item_scale`` movies, star ratings
    from user/item biases plus a low-rank taste term (so models have signal), 18 genres.
    Fully vectorised; 16x users (~16M ratings) takes seconds.  ``user_counts`` is the
    (median, log-sigma, floor) of ratings per user; ``item_sigma`` replaces the Zipf popularity
    curve by a log-normal one of that sigma (a long tail of rarely rated movies); ``half_stars``
    rounds ratings to 0.5..5 in half stars, like ML-10M and later.
    """
    from batch.movielens import Movies, Ratings

    rng = np.random.default_rng(seed)
    n_users, n_items = int(6040 * user_scale), int(3706 * item_scale)
    median, sigma, floor = user_counts
    counts = np.exp(rng.normal(np.log(median), sigma, n_users))
    counts = np.clip(counts, floor, 0.6 * n_items).astype(np.int64)
    if item_sigma is None:
        popularity = 1.0 / np.arange(1, n_items + 1) ** 0.75
    else:
        popularity = np.exp(rng.normal(0.0, item_sigma, n_items))
    popularity = rng.permutation(popularity / popularity.sum())
    users = np.repeat(np.arange(n_users), counts)
    items = rng.choice(n_items, size=len(users), p=popularity)
    pairs = np.unique(users * n_items + items)  # drop repeated (user, item) draws
    users, items = pairs // n_items, pairs % n_items
    taste_u, taste_i = rng.normal(size=(n_users, 4)), rng.normal(size=(n_items, 4))
    raw = (3.58 + rng.normal(0, 0.4, n_users)[users] + rng.normal(0, 0.5, n_items)[items]
           + 0.35 * np.einsum("nf,nf->n", taste_u[users], taste_i[items]) + rng.normal(0, 0.7, len(users)))
    stars = (np.clip(np.rint(raw * 2) / 2, 0.5, 5) if half_stars else np.clip(np.rint(raw), 1, 5))
    stars = stars.astype(np.float32)
    genre_names = [f"Genre{g}" for g in range(18)]
    genre_sets = [[genre_names[g] for g in sorted(set(rng.choice(18, size=rng.integers(1, 4))))]
                  for _ in range(n_items)]
    titles = [f"Movie {i + 1} (2000)" for i in range(n_items)]
    movies = Movies(np.arange(1, n_items + 1, dtype=np.int64), titles, genre_sets)
    stamps = 956703932 + rng.integers(0, 10**8, len(users))
    return Ratings(users + 1, items + 1, stars, stamps), movies


ML25M_SHAPE = {"users": 162_541, "movies": 59_047, "ratings": 25_000_095}


def ml25m_like(seed: int = 0):
    """Generate ML-25M-shaped data: ~162k users, ~59k rated movies, ~25M half-star ratings.

    The same generator as :func:`ml1m_like`, scaled to ML-25M's users and movies, with ML-25M's
    per-user counts (median ~71, mean ~154, at least 20) and a log-normal popularity curve, so
    that, as in ML-25M, most movies are rarely rated: a long tail of movies with a handful of
    ratings behind a head of blockbusters rated by a large share of users.
    """
    users_x = ML25M_SHAPE["users"] / 6040
    items_x = ML25M_SHAPE["movies"] / 3706
    return ml1m_like(users_x, items_x, seed=seed, half_stars=True, user_counts=(90, 1.24, 20),
                     item_sigma=2.4)


def write_csv_dataset(directory: Path, ratings, movies) -> Path:
    """Write ``ratings.csv`` and ``movies.csv`` in the ML-20M/25M format into ``directory``."""
    import pandas as pd

    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"movieId": movies.movie_ids, "title": movies.titles,
                  "genres": ["|".join(g) for g in movies.genres]}).to_csv(directory / "movies.csv",
                                                                          index=False)
    pd.DataFrame({"userId": ratings.user_ids, "movieId": ratings.movie_ids, "rating": ratings.ratings,
                  "timestamp": ratings.timestamps}).to_csv(directory / "ratings.csv", index=False,
                                                            float_format="%.1f", chunksize=1_000_000)
    return directory


def timed_dataset(n_users: int = 200, n_items: int = 100, seed: int = 3, start: int = 978300000):
    """A dataset whose users arrive over time (for the temporal protocol), with known timestamps.

    User ``u`` joins on day ``join[u]`` (spread over 300 days, so later users have no rating
    before a late cut) and rates 15-40 popularity-skewed movies on days ``join + Exp(20)``.
    Timestamps have a one-day resolution, so many ratings share one (ties at a cut).
    Returns (ratings rows, movies rows, join day per user id).
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    weights /= weights.sum()
    movies = [(i + 1, f"Timed {i + 1} (19{60 + i % 40})", [GENRES[i % 4]]) for i in range(n_items)]
    join = {u + 1: int(d) for u, d in enumerate(np.sort(rng.uniform(0, 300, n_users)))}
    ratings = []
    for user_id, day in join.items():
        items = rng.choice(n_items, size=int(rng.integers(15, 41)), replace=False, p=weights)
        taste = rng.normal(size=4)
        for i in items:
            when = day + int(rng.exponential(20))
            stars = int(np.clip(round(3.4 + taste[i % 4] + rng.normal(scale=0.7) - i / n_items), 1, 5))
            ratings.append((user_id, int(i) + 1, stars, start + when * 86400))
    return ratings, movies, join
