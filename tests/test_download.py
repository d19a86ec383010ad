"""Download: verified, atomic, and honest about failures (served by a local HTTP server)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from batch.download import DownloadError, Release, download


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"ml-1m/{name}", data)
    return buf.getvalue()


FILES = {"ratings.dat": b"1::1::5::978300760\n", "movies.dat": b"1::Toy Story (1995)::Comedy\n",
         "users.dat": b"1::F::1::10::48067\n"}
ARCHIVE = make_zip(FILES)


def release_for(payload: bytes) -> Release:
    return Release("ml-1m", "unused", hashlib.md5(payload).hexdigest(),
                   hashlib.sha256(payload).hexdigest(), tuple(FILES))


@pytest.fixture
def server():
    """Serve /good.zip, /truncated.zip (Content-Length lies) and /broken.zip on loopback."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/missing.zip":
                self.send_error(404)
                return
            body = ARCHIVE if self.path != "/broken.zip" else b"not a zip at all"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + (500 if "truncated" in self.path else 0)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_good_archive_is_verified_and_extracted(tmp_path, server):
    target = download(tmp_path, release_for(ARCHIVE), url=f"{server}/good.zip")
    assert target == tmp_path / "ml-1m"
    assert {p.name: p.read_bytes() for p in target.iterdir()} == FILES
    assert [p.name for p in tmp_path.iterdir()] == ["ml-1m"]  # no temp files left behind


def test_present_files_are_not_downloaded_again(tmp_path, server):
    download(tmp_path, release_for(ARCHIVE), url=f"{server}/good.zip")
    # the URL is now wrong: a second call must not touch the network
    assert download(tmp_path, release_for(ARCHIVE), url=f"{server}/missing.zip").is_dir()


def test_checksum_mismatch_writes_nothing(tmp_path, server):
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(tmp_path, release_for(b"other bytes"), url=f"{server}/good.zip")
    assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_writes_nothing(tmp_path, server):
    with pytest.raises(DownloadError, match="truncated|failed"):
        download(tmp_path, release_for(ARCHIVE), url=f"{server}/truncated.zip")
    assert list(tmp_path.iterdir()) == []


def test_http_error_and_bad_zip(tmp_path, server):
    with pytest.raises(DownloadError, match="404"):
        download(tmp_path, release_for(ARCHIVE), url=f"{server}/missing.zip")
    with pytest.raises(DownloadError, match="not a valid zip"):
        download(tmp_path, release_for(b"not a zip at all"), url=f"{server}/broken.zip")
    assert list(tmp_path.iterdir()) == []


def test_failed_redownload_keeps_the_previous_copy(tmp_path, server):
    download(tmp_path, release_for(ARCHIVE), url=f"{server}/good.zip")
    with pytest.raises(DownloadError):
        download(tmp_path, release_for(b"x"), url=f"{server}/good.zip", force=True)
    assert (tmp_path / "ml-1m" / "ratings.dat").read_bytes() == FILES["ratings.dat"]


# --- offline (issue 22 #3, #5): the real `recsys-batch` command, an unreachable mirror -------------
RECSYS_BATCH = str(Path(sys.executable).parent / "recsys-batch")
UNREACHABLE = "http://127.0.0.1:9/ml-1m.zip"  # the discard port: connection refused, as offline
HINT = "Offline? Pass --data-dir DIR, a directory holding ratings.dat and movies.dat"


def batch(args: list[str], cwd, **env: str) -> subprocess.CompletedProcess:
    """Run the real ``recsys-batch`` in ``cwd`` with no Redis, data or dataset settings but ``env``."""
    clean = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RECSYS_DATA_DIR",
                                                             "RECSYS_EMBEDDED_DIR", "RECSYS_DATASET_URL")}
    return subprocess.run([RECSYS_BATCH, *args], cwd=cwd, env={**clean, **env}, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("url", [UNREACHABLE, "http://no-such-host.invalid/ml-1m.zip"])
def test_run_without_network_prints_the_offline_hint(tmp_path, redis_url, prefix, url):
    out = batch(["run"], tmp_path, REDIS_URL=redis_url, RECSYS_PREFIX=prefix, RECSYS_DATASET_URL=url)
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: download of {url} failed: ") and HINT in last, last
    assert "--dataset-url file:///path/to/ml-1m.zip" in last
    assert "Traceback" not in out.stderr and "urlopen error" not in out.stderr, out.stderr
    assert not (tmp_path / "data" / "ml-1m").exists()


def test_first_run_says_it_started_the_embedded_server_and_left_it_running(tmp_path):
    from lookup_api import embedded_redis

    directory = tmp_path / "data" / "redis"
    try:
        out = batch(["run"], tmp_path, RECSYS_DATASET_URL=UNREACHABLE)
        assert out.returncode == 1 and HINT in out.stderr, out.stderr
        started = [line for line in out.stderr.splitlines() if "started the embedded redis-server" in line]
        assert len(started) == 1, out.stderr
        pid = embedded_redis.Embedded(directory).pid()
        assert pid is not None, "the server is left running"
        assert f"pid {pid}, data in {directory}," in started[0]
        assert "keeps running" in started[0] and "`recsys-batch embedded stop`" in started[0]
        again = batch(["run"], tmp_path, RECSYS_DATASET_URL=UNREACHABLE)  # found running: said once only
        assert "started the embedded redis-server" not in again.stderr and again.returncode == 1
    finally:
        embedded_redis.stop(directory)


def test_download_accepts_files_already_in_the_data_dir(tmp_path):
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
    out = batch(["--data-dir", str(tmp_path), "download", "--url", UNREACHABLE], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"ml-1m ready in {tmp_path}"
    assert not (tmp_path / "ml-1m").exists()


def test_a_failed_download_leaves_no_empty_directory(tmp_path, server):
    target = tmp_path / "new" / "movielens"
    out = batch(["--data-dir", str(target), "download", "--url", UNREACHABLE], tmp_path)
    assert out.returncode == 1 and HINT in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "new").exists(), list(tmp_path.rglob("*"))
    # the server answered: no offline hint
    with pytest.raises(DownloadError, match="failed: HTTP 404 Not Found$"):
        download(target, release_for(ARCHIVE), url=f"{server}/missing.zip")
    assert not (tmp_path / "new").exists()
