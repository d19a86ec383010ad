"""Every MovieLens release format: ML-1M/10M ``.dat`` and ML-20M/25M/latest CSV, on generated files."""

from __future__ import annotations

import hashlib
import re

import pytest
from click.testing import CliRunner

from batch.cli import cli
from batch.download import RELEASES, Release, download
from batch.movielens import DataError
from batch.movielens_ratings import load_dir
from tests.synth import random_dataset
from tests.test_download import make_zip

DAT_10M = {
    "movies.dat": "1::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy|Romance\n"
                  "2::Toy Story (1995)::Animation|Children|Comedy\n3::Unknown (2015)::(no genres listed)\n",
    "ratings.dat": "1::1::4.5::1112486027\n1::2::3::1112484676\n2::3::0.5::1112484819\n",
}
CSV_FILES = {
    "movies.csv": 'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n'
                  "2,Toy Story (1995),Adventure|Animation\n3,Café (2010),(no genres listed)\n",
    "ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.5,1112486027\n1,2,3.0,1112484676\n"
                   "2,3,0.5,1112484819\n",
}


def write(tmp_path, files: dict[str, str], encoding: str = "utf-8"):
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode(encoding))
    return tmp_path


@pytest.mark.parametrize("release", ["ml-10m", "ml-20m", "ml-25m", "ml-latest-small"])
def test_each_release_format_loads(tmp_path, release):
    fmt = RELEASES[release].fmt
    write(tmp_path, DAT_10M if fmt.kind == "dat" else CSV_FILES)
    ratings, movies = load_dir(tmp_path, fmt)
    assert ratings.ratings.tolist() == [4.5, 3.0, 0.5]
    assert ratings.user_ids.tolist() == [1, 1, 2] and ratings.movie_ids.tolist() == [1, 2, 3]
    assert movies.genres[2] == []  # "(no genres listed)"
    title = movies.titles[0]
    assert title in ("Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)", "American President, The (1995)")


BAD = {
    "half star in ML-1M": ("ml-1m", "ratings.dat", "1::1::4.5::1\n", ":1: rating '4.5' is not an integer"),
    "zero stars": ("ml-20m", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,0.0,1\n",
                   "ratings.csv:2: rating 0 is outside 0.5..5 in steps of 0.5"),
    "quarter star": ("ml-10m", "ratings.dat", "1::1::3.25::1\n", ":1: rating 3.25 is outside 0.5..5"),
    "5.5 stars": ("ml-25m", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,3.0,1\n1,2,5.5,1\n",
                  "ratings.csv:3: rating 5.5 is outside"),
    "bad header": ("ml-20m", "ratings.csv", "user,movie,rating,ts\n1,1,3.0,1\n",
                   "ratings.csv:1: expected header"),
    "csv wrong fields": ("ml-latest-small", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,3.0\n",
                         "ratings.csv:2: expected 4 ','-separated fields, found 3"),
    "movies csv header": ("ml-20m", "movies.csv", "id,name,genres\n1,X (1999),Drama\n",
                          "movies.csv:1: expected header movieId,title,genres"),
    "invalid utf-8 title": ("ml-10m", "movies.dat", b"1::Am\xe9lie (2001)::Comedy\n",
                            "movies.dat:1: not valid utf-8"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_format_specific_errors(tmp_path, case):
    release, name, content, message = BAD[case]
    fmt = RELEASES[release].fmt
    write(tmp_path, DAT_10M if fmt.kind == "dat" else CSV_FILES, fmt.encoding)
    (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as err:
        load_dir(tmp_path, fmt)
    assert message in str(err.value)


def test_latest_release_verifies_against_published_md5(tmp_path):
    """``ml-latest-small`` has no pinned checksum: the ``.md5`` published beside it is used."""
    import http.server
    import threading

    archive = make_zip({"ratings.csv": CSV_FILES["ratings.csv"].encode(),
                        "movies.csv": CSV_FILES["movies.csv"].encode()})
    md5 = hashlib.md5(archive).hexdigest()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/x.zip": archive, "/x.zip.md5": f"MD5 (x.zip) = {md5}\n".encode(),
                    "/bad.zip": archive, "/bad.zip.md5": b"0" * 32}.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        release = RELEASES["ml-latest-small"]
        assert release.md5 is None
        target = download(tmp_path, release, url=f"{base}/x.zip")
        assert load_dir(target, release.fmt)[0].ratings.tolist() == [4.5, 3.0, 0.5]
        other = Release("ml-latest-small", "unused", None, None, release.files, release.fmt)
        with pytest.raises(Exception, match="checksum mismatch"):
            download(tmp_path / "b", other, url=f"{base}/bad.zip")
    finally:
        httpd.shutdown()


def test_run_on_a_csv_release_end_to_end(tmp_path, redis_url, prefix):
    ratings, movies = random_dataset(n_users=120, n_items=60)
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f'{m},"{t}",{"|".join(g) or "(no genres listed)"}\n'
                                           for m, t, g in movies), encoding="utf-8")
    half = [(u, m, r - 0.5 if r > 1 and u % 3 == 0 else r, t) for u, m, r, t in ratings]  # half stars
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in half),
        encoding="utf-8")
    result = CliRunner().invoke(cli, ["--redis-url", redis_url, "--prefix", prefix, "--dataset", "ml-20m",
                                      "--data-dir", str(tmp_path), "run", "--top-n", "10",
                                      "--candidates", "20", "--content-candidates", "5"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert re.search(r"published: 120 users, 60 movies", result.output)
    status = CliRunner().invoke(cli, ["--redis-url", redis_url, "--prefix", prefix, "status"])
    assert "dataset: ml-20m" in status.output


def test_every_release_has_a_grouplens_url_and_format():
    for name, release in RELEASES.items():
        assert release.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert release.fmt.ratings_file in release.files and release.fmt.movies_file in release.files
        assert release.md5 or name.startswith("ml-latest")


def test_ml1m_like_generator_has_ml1m_shape():
    import numpy as np

    from tests.synth import ml1m_like

    ratings, movies = ml1m_like(user_scale=0.25, item_scale=0.5, seed=3)
    per_user = np.bincount(ratings.user_ids)[1:]
    assert len(per_user) == 1510 and len(movies) == 1853
    assert per_user.min() >= 10 and 80 <= np.median(per_user) <= 160
    assert set(np.unique(ratings.ratings)) == {1, 2, 3, 4, 5}
    assert 0.45 <= (ratings.ratings >= 4).mean() <= 0.65  # ML-1M: 0.575
    pairs = ratings.user_ids * 10**6 + ratings.movie_ids
    assert len(np.unique(pairs)) == len(pairs)  # no duplicate (user, movie)


def test_scale_benchmark_measures_every_stage():
    from tests.bench_scale import STAGES, measure

    result = measure(0.05, 0.1)
    assert set(result["seconds"]) == set(STAGES)
    # peak memory per stage as run: the three fits are one "train" stage (pipeline.Models.fit)
    assert set(result["peak_mib"]) == {"index", "train", "candidates", "rank", "serialise"}
    assert result["n_users"] == 302 and all(v > 0 for v in result["peak_mib"].values())
