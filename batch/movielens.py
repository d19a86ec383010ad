"""Parse and validate MovieLens files: ``.dat`` (``::``, ML-1M/10M) and CSV (ML-20M/25M/latest).

The happy path is pandas' C parser over the whole file (ML-1M in ~0.3 s).  When
anything is off, a line-by-line pass finds the first bad line and raises
:class:`DataError` with ``file:line: reason`` so an operator can fix it.
Ratings live in :mod:`batch.movielens_ratings`; this module holds the types, the
movies parsers; :func:`batch.movielens_ratings.load_dir` reads a whole directory.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batch.formats import ML_1M_FORMAT, DataError, Format  # defined in a light module
from lookup_api.contract.keys import MAX_ID

log = logging.getLogger(__name__)

MAX_LINE = 4096
NO_GENRES = "(no genres listed)"


@dataclass(frozen=True)
class Ratings:
    """Explicit ratings in file order: parallel arrays of raw ids (n_ratings,)."""

    user_ids: np.ndarray  # int64
    movie_ids: np.ndarray  # int64
    ratings: np.ndarray  # float32, 1..5 (0.5..5 for half-star releases)
    timestamps: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.ratings)

    def take(self, index: np.ndarray) -> Ratings:
        """Return the subset of ratings at ``index`` (positions or boolean mask)."""
        return Ratings(
            self.user_ids[index], self.movie_ids[index], self.ratings[index], self.timestamps[index]
        )


@dataclass(frozen=True)
class Movies:
    """The catalogue: raw movie id -> title and genre list."""

    movie_ids: np.ndarray  # int64 (n_movies,)
    titles: list[str]
    genres: list[list[str]]

    def __len__(self) -> int:
        return len(self.movie_ids)

    def lookup(self) -> dict[int, tuple[str, list[str]]]:
        """Return ``{movie_id: (title, genres)}``."""
        return {int(m): (t, g) for m, t, g in zip(self.movie_ids, self.titles, self.genres, strict=True)}


def read_bytes(path: Path) -> bytes:
    """Read a whole data file, turning OS errors and empty/BOM files into :class:`DataError`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except PermissionError:
        raise DataError(path, None, "permission denied") from None
    except IsADirectoryError:
        raise DataError(path, None, "is a directory, expected a file") from None
    except OSError as exc:
        raise DataError(path, None, f"cannot read: {exc.strerror}") from None
    if not data.strip():
        raise DataError(path, 1, "file is empty")
    if data.startswith(b"\xef\xbb\xbf"):
        raise DataError(path, 1, "starts with a UTF-8 byte-order mark; remove it")
    return data


def int_field(path: Path, lineno: int, name: str, value: str, limit: int = MAX_ID) -> int:
    """Parse an integer in 1..``limit`` (default: the id range), else DataError at ``path:lineno``."""
    try:
        number = int(value)
    except ValueError:
        raise DataError(path, lineno, f"{name} {value[:40]!r} is not an integer") from None
    if number <= 0:
        raise DataError(path, lineno, f"{name} {number} must be positive")
    if number > limit:
        raise DataError(path, lineno, f"{name} {number} is above {limit}"
                        + (" (the largest id the API serves)" if limit == MAX_ID else ""))
    return number


def split_lines(path: Path, data: bytes, fields: int, sep: str = "::", encoding: str = "latin-1"):
    """Yield ``(lineno, parts)`` for each non-blank line, checking length and field count."""
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        if len(raw) > MAX_LINE:
            raise DataError(path, lineno, f"line is {len(raw)} bytes long (limit {MAX_LINE})")
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise DataError(path, lineno, f"not valid {encoding}: {exc.reason}") from None
        parts = next(csv.reader([text])) if sep == "," else text.split(sep)
        if len(parts) != fields:
            hint = f" (separator must be '{sep}')" if len(parts) == 1 else ""
            reason = f"expected {fields} '{sep}'-separated fields, found {len(parts)}{hint}"
            raise DataError(path, lineno, reason)
        yield lineno, parts


def load_movies(path: Path | str, fmt: Format = ML_1M_FORMAT) -> Movies:
    """Load and validate ``movies.dat`` (``MovieID::Title::Genre|Genre``) or ``movies.csv``."""
    path = Path(path)
    data = read_bytes(path)
    lines = split_lines(path, data, 3, "," if fmt.kind == "csv" else "::",
                        "utf-8" if fmt.kind == "csv" else fmt.encoding)
    if fmt.kind == "csv":
        _, header = next(lines, (1, None))
        if header != ["movieId", "title", "genres"]:
            raise DataError(path, 1, f"expected header movieId,title,genres, found {header}")
    ids, titles, genres, seen = [], [], [], set()
    for lineno, (movie, title, genre) in lines:
        movie_id = int_field(path, lineno, "movie id", movie)
        if movie_id in seen:
            raise DataError(path, lineno, f"duplicate movie id {movie_id}")
        if not title.strip():
            raise DataError(path, lineno, "empty title")
        if fmt.kind == "dat" and fmt.encoding == "latin-1" and _looks_utf8(title):
            raise DataError(path, lineno, f"title {title!r} looks UTF-8 encoded; expected latin-1")
        seen.add(movie_id)
        ids.append(movie_id)
        titles.append(title.strip())
        genres.append([g for g in genre.strip().split("|") if g and g != NO_GENRES])
    log.info("loaded %s movies from %s", len(ids), path)
    return Movies(np.asarray(ids, dtype=np.int64), titles, genres)


def _looks_utf8(text: str) -> bool:
    """Return True when latin-1 text is really multi-byte UTF-8 (mojibake such as 'Ã©')."""
    raw = text.encode("latin-1")
    if raw.isascii():
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
