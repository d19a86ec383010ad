"""Fetch a MovieLens archive, verify its checksums and extract it atomically.

Nothing half-written is ever left where the loader looks: the archive streams to
a temporary file, is verified (size, md5, sha256), extracted into a temporary
directory beside the target, and only then renamed into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Release:
    """A published MovieLens archive and what it must contain."""

    name: str
    url: str
    md5: str
    sha256: str
    files: tuple[str, ...]


ML_1M = Release(
    name="ml-1m",
    url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
    md5="c4d9eecfca2ab87c1945afe126590906",
    sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    files=("ratings.dat", "movies.dat", "users.dat"),
)
RELEASES = {ML_1M.name: ML_1M}


class DownloadError(Exception):
    """The archive could not be fetched, failed verification, or is malformed."""


def is_complete(directory: Path, release: Release = ML_1M) -> bool:
    """Return True when ``directory`` holds every file the release needs."""
    return all((directory / f).is_file() for f in release.files if f != "users.dat")


def _fetch(url: str, dest: Path, timeout: float) -> tuple[str, str]:
    """Stream ``url`` to ``dest``; return its (md5, sha256) hex digests."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, dest.open("wb") as out:
            expected = resp.headers.get("Content-Length")
            received = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                md5.update(chunk)
                sha.update(chunk)
                received += len(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DownloadError(f"download of {url} failed: {exc}") from None
    if expected is not None and received != int(expected):
        raise DownloadError(
            f"download of {url} was truncated: got {received} of {expected} bytes"
        )
    return md5.hexdigest(), sha.hexdigest()


def download(
    data_dir: Path | str,
    release: Release = ML_1M,
    *,
    url: str | None = None,
    timeout: float = 60.0,
    force: bool = False,
) -> Path:
    """Download ``release`` into ``data_dir/<name>`` unless already there; return that path."""
    data_dir = Path(data_dir)
    target = data_dir / release.name
    if is_complete(target, release) and not force:
        log.info("%s already present in %s", release.name, target)
        return target
    data_dir.mkdir(parents=True, exist_ok=True)
    url = url or release.url
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{release.name}-") as tmp:
        archive = Path(tmp) / "archive.zip"
        log.info("downloading %s", url)
        md5, sha = _fetch(url, archive, timeout)
        if md5 != release.md5 or sha != release.sha256:
            raise DownloadError(
                f"checksum mismatch for {url}: md5 {md5} (expected {release.md5}), "
                f"sha256 {sha} (expected {release.sha256}); nothing was written"
            )
        staging = Path(tmp) / "extract"
        _extract(archive, staging, release)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    log.info("%s verified and extracted to %s", release.name, target)
    return target


def _extract(archive: Path, staging: Path, release: Release) -> None:
    """Extract the release's files (flattened, no path tricks) into ``staging``."""
    staging.mkdir()
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {Path(i.filename).name: i for i in zf.infolist() if not i.is_dir()}
            missing = [f for f in release.files if f not in members]
            if missing:
                raise DownloadError(f"archive lacks {', '.join(missing)}")
            for name in release.files:
                with zf.open(members[name]) as src, (staging / name).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"archive is not a valid zip file: {exc}") from None
