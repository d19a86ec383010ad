"""Loader: fast happy path, precise ``file:line: reason`` on every kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest

from batch.movielens import DataError, load_movies
from batch.movielens_ratings import load_dir, load_ratings

GOOD_MOVIES = "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Misérables, Les (1995)::Drama\n"
GOOD_RATINGS = "1::1::5::978300760\n1::2::3::978302109\n2::1::4::978301968\n"


def write(tmp_path, ratings: bytes | str = GOOD_RATINGS, movies: bytes | str = GOOD_MOVIES):
    enc = lambda x: x if isinstance(x, bytes) else x.encode("latin-1")  # noqa: E731
    (tmp_path / "ratings.dat").write_bytes(enc(ratings))
    (tmp_path / "movies.dat").write_bytes(enc(movies))
    return tmp_path


def test_loads_valid_files_with_latin1_titles(tmp_path):
    ratings, movies = load_dir(write(tmp_path))
    assert ratings.user_ids.tolist() == [1, 1, 2]
    assert ratings.movie_ids.tolist() == [1, 2, 1]
    assert ratings.ratings.tolist() == [5.0, 3.0, 4.0]
    assert movies.titles[1] == "Misérables, Les (1995)"
    assert movies.genres[0] == ["Animation", "Children's", "Comedy"]


BAD_RATINGS = {
    "truncated line": ("1::1::5::978300760\n1::2::3\n", 2, "expected 4 '::'-separated fields, found 3"),
    "wrong separator": ("1::1::5::978300760\n1,2,3,978302109\n", 2, "separator must be '::'"),
    "tab separator": ("1::1::5::978300760\n1\t2\t3\t978302109\n", 2, "found 1"),
    "non-numeric field": ("1::1::5::978300760\n1::x::3::978302109\n", 2, "movie id 'x' is not an integer"),
    "rating 0": ("1::1::5::978300760\n1::2::0::978302109\n", 2, "rating 0 is outside 1..5"),
    "rating 6": ("1::1::6::978300760\n", 1, "rating 6 is outside 1..5"),
    "half star": ("1::1::3.5::978300760\n", 1, "rating '3.5' is not an integer"),
    "unknown movie": ("1::1::5::978300760\n2::99::3::978302109\n", 2, "movie id 99 is not in movies.dat"),
    "duplicate pair": ("1::1::5::978300760\n2::1::3::1\n1::1::4::978302109\n", 3,
                       "duplicate rating of movie 1 by user 1"),
    "negative user": ("-1::1::5::978300760\n", 1, "user id -1 must be positive"),
    "empty file": ("", 1, "file is empty"),
    "utf-8 bom": (b"\xef\xbb\xbf1::1::5::978300760\n", 1, "UTF-8 byte-order mark"),
    "extremely long line": ("1::1::5::978300760\n1::1::5::" + "9" * 100_000 + "\n", 2, "bytes long"),
    "blank line before error": ("1::1::5::978300760\n\n1::2::7::1\n", 3, "rating 7 is outside 1..5"),
}


@pytest.mark.parametrize("case", sorted(BAD_RATINGS))
def test_bad_ratings_name_file_line_and_reason(tmp_path, case):
    text, line, reason = BAD_RATINGS[case]
    write(tmp_path, ratings=text)
    with pytest.raises(DataError) as err:
        load_dir(tmp_path)
    assert err.value.path.name == "ratings.dat"
    assert err.value.line == line
    assert reason in err.value.reason
    assert str(err.value).startswith(f"{tmp_path / 'ratings.dat'}:{line}: ")


BAD_MOVIES = {
    "missing genres field": ("1::Toy Story (1995)\n", 1, "found 2"),
    "duplicate id": (GOOD_MOVIES + "2::Again (1999)::Drama\n", 3, "duplicate movie id 2"),
    "utf-8 title": ("1::Misérables (1995)::Drama\n".encode(), 1, "looks UTF-8 encoded"),
    "non-numeric id": ("one::Toy Story (1995)::Comedy\n", 1, "movie id 'one' is not an integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_MOVIES))
def test_bad_movies_name_file_line_and_reason(tmp_path, case):
    text, line, reason = BAD_MOVIES[case]
    write(tmp_path, movies=text)
    with pytest.raises(DataError) as err:
        load_movies(tmp_path / "movies.dat")
    assert (err.value.line, err.value.path.name) == (line, "movies.dat")
    assert reason in err.value.reason


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="ratings.dat: file not found"):
        load_ratings(tmp_path / "ratings.dat")
    with pytest.raises(DataError, match="is a directory"):
        load_ratings(tmp_path)


def test_permission_error_is_reported_even_as_root(tmp_path, monkeypatch):
    path = write(tmp_path) / "ratings.dat"

    def deny(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(path), "read_bytes", deny)
    with pytest.raises(DataError, match="ratings.dat: permission denied"):
        load_ratings(path)


def test_no_genres_listed_gives_empty_genre_list(tmp_path):
    write(tmp_path, movies=GOOD_MOVIES + "3::Unknown (2001)::(no genres listed)\n")
    assert load_movies(tmp_path / "movies.dat").genres[2] == []


@pytest.mark.realdata
def test_real_ml1m_loads_fast_and_exactly(real_data):
    import time

    started = time.perf_counter()
    ratings, movies = load_dir(real_data)
    elapsed = time.perf_counter() - started
    assert len(ratings) == 1_000_209 and len(movies) == 3883
    assert len(np.unique(ratings.user_ids)) == 6040 and len(np.unique(ratings.movie_ids)) == 3706
    assert np.bincount(ratings.ratings.astype(int))[1:].tolist() == [56174, 107557, 261197, 348971, 226310]
    assert elapsed < 2.0, f"loading ML-1M took {elapsed:.2f}s"


def test_extra_field_on_every_line_is_not_silently_shifted(tmp_path):
    write(tmp_path, ratings="9::1::1::5::978300760\n9::2::1::4::978300761\n")
    with pytest.raises(DataError, match=r"ratings.dat:1: expected 4 '::'-separated fields, found 5"):
        load_dir(tmp_path)
