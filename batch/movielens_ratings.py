"""Parse and validate MovieLens ratings files (``ratings.dat`` or ``ratings.csv``)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from batch.formats import ML_1M_FORMAT, DataError, Format
from batch.movielens import Movies, Ratings, int_field, load_movies, read_bytes, split_lines
from lookup_api.contract.keys import MAX_ID

log = logging.getLogger(__name__)

CSV_HEADER = b"userId,movieId,rating,timestamp"


def _rating_field(path: Path, lineno: int, value: str, fmt: Format) -> None:
    parse, kind = (float, "a number") if fmt.half_stars else (int, "an integer")
    try:
        parse(value)
    except ValueError:
        raise DataError(path, lineno, f"rating {value[:40]!r} is not {kind}") from None


def _explain(path: Path, data: bytes, fmt: Format) -> DataError:
    """Find the first malformed line (slow path, runs only when the fast parse failed)."""
    lines = split_lines(path, data, 4, "," if fmt.kind == "csv" else "::")
    if fmt.kind == "csv":
        next(lines, None)  # the header was checked already
    for lineno, (user, movie, rating, stamp) in lines:
        int_field(path, lineno, "user id", user)
        int_field(path, lineno, "movie id", movie)
        _rating_field(path, lineno, rating, fmt)
        int_field(path, lineno, "timestamp", stamp, limit=2**63 - 1)
    return DataError(path, None, "could not be parsed")


def _line_numbers(data: bytes) -> np.ndarray:
    """Return the 1-based line number of each non-blank line, in order."""
    lines = data.split(b"\n")
    keep = np.fromiter((bool(x.strip()) for x in lines), dtype=bool, count=len(lines))
    return np.flatnonzero(keep) + 1


def _parse(path: Path, data: bytes, fmt: Format) -> pd.DataFrame:
    """Fast path: pandas' C parser; any failure is explained line by line."""
    dtypes = {"user": "int64", "movie": "int64", "rating": "float64" if fmt.half_stars else "int64",
              "ts": "int64"}
    if fmt.kind == "csv":
        first = data.split(b"\n", 1)[0].rstrip(b"\r")
        if first != CSV_HEADER:
            raise DataError(path, 1, f"expected header {CSV_HEADER.decode()}, found {first[:80]!r}")
        source, sep, skip = io.BytesIO(data), ",", 1
    else:
        if b"\t" in data:  # the fast path turns '::' into tabs; real tabs are malformed
            raise _explain(path, data.replace(b"\t", b" "), fmt)
        source, sep, skip = io.BytesIO(data.replace(b"::", b"\t")), "\t", 0
    try:
        frame = pd.read_csv(source, sep=sep, header=None, skiprows=skip, names=list(dtypes),
                            dtype=dtypes, engine="c", skip_blank_lines=True)
    except (ValueError, OverflowError, pd.errors.ParserError):
        raise _explain(path, data, fmt) from None
    if frame.isna().to_numpy().any():
        raise _explain(path, data, fmt)
    separators = data.count(b"," if fmt.kind == "csv" else b"::") - (3 if fmt.kind == "csv" else 0)
    if separators != 3 * len(frame):  # a line with extra fields would shift columns silently
        raise _explain(path, data, fmt)
    return frame


def load_ratings(path: Path | str, movies: Movies | None = None, fmt: Format = ML_1M_FORMAT) -> Ratings:
    """Load and validate a ratings file: ids, rating scale, duplicates, unknown movies."""
    path = Path(path)
    data = read_bytes(path)
    frame = _parse(path, data, fmt)
    users, items = frame["user"].to_numpy(), frame["movie"].to_numpy()
    ratings, stamps = frame["rating"].to_numpy(), frame["ts"].to_numpy()
    header = 1 if fmt.kind == "csv" else 0

    def fail(mask: np.ndarray, reason) -> None:
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            raise DataError(path, int(_line_numbers(data)[row + header]), reason(row))

    low, high = fmt.rating_scale
    fail(users <= 0, lambda r: f"user id {users[r]} must be positive")
    fail(items <= 0, lambda r: f"movie id {items[r]} must be positive")
    for ids, name in ((users, "user id"), (items, "movie id")):  # one range for batch, `show` and the API
        fail(ids > MAX_ID, lambda r, ids=ids, name=name: f"{name} {ids[r]} is above {MAX_ID} "
                                                         "(the largest id the API serves)")
    fail((ratings < low) | (ratings > high) | (ratings * 2 != np.round(ratings * 2)),
         lambda r: f"rating {ratings[r]:g} is outside {low:g}..{high:g}"
                   + (" in steps of 0.5" if fmt.half_stars else ""))
    fail(stamps < 0, lambda r: f"timestamp {stamps[r]} is negative")
    fail(frame.duplicated(["user", "movie"]).to_numpy(),
         lambda r: f"duplicate rating of movie {items[r]} by user {users[r]}")
    if movies is not None:
        fail(~np.isin(items, movies.movie_ids), lambda r: f"movie id {items[r]} is not in {fmt.movies_file}")
    log.info("loaded %s ratings by %s users from %s", len(ratings), len(np.unique(users)), path)
    return Ratings(users, items, ratings.astype(np.float32), stamps)


def load_dir(data_dir: Path | str, fmt: Format = ML_1M_FORMAT) -> tuple[Ratings, Movies]:
    """Load the movies file then the ratings file from ``data_dir``, cross-validated."""
    data_dir = Path(data_dir)
    movies = load_movies(data_dir / fmt.movies_file, fmt)
    return load_ratings(data_dir / fmt.ratings_file, movies, fmt), movies
