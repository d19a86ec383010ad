"""Download: verified, atomic, and honest about failures (served by a local HTTP server)."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile

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
