"""Fetch a MovieLens archive, verify its checksums and extract it atomically.

Nothing half-written is ever left where the loader looks: the archive streams to
a temporary file, is verified (size, md5, sha256), extracted into a temporary
directory beside the target, and only then renamed into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from batch.formats import ML_1M_FORMAT, Format
from lookup_api.contract.errors import RecsysError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Release:
    """A published MovieLens archive, what it must contain, and how its files are stored.

    ``md5`` may be None for the ``latest`` releases, which GroupLens regenerates: their
    checksum is then read from the ``.md5`` file published beside the archive.
    """

    name: str
    url: str
    md5: str | None
    sha256: str | None
    files: tuple[str, ...]
    fmt: Format = ML_1M_FORMAT


BASE_URL = "https://files.grouplens.org/datasets/movielens"
CSV = Format(kind="csv", encoding="utf-8", half_stars=True)
ML_1M = Release(
    name="ml-1m",
    url=f"{BASE_URL}/ml-1m.zip",
    md5="c4d9eecfca2ab87c1945afe126590906",
    sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    files=("ratings.dat", "movies.dat", "users.dat"),
)
RELEASES = {
    r.name: r
    for r in (
        ML_1M,
        Release("ml-10m", f"{BASE_URL}/ml-10m.zip", "ce571fd55effeba0271552578f2648bd", None,
                ("ratings.dat", "movies.dat"), Format(kind="dat", encoding="utf-8", half_stars=True)),
        Release("ml-20m", f"{BASE_URL}/ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3",
                "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
                ("ratings.csv", "movies.csv"), CSV),
        Release("ml-25m", f"{BASE_URL}/ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada",
                "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
                ("ratings.csv", "movies.csv"), CSV),
        Release("ml-latest-small", f"{BASE_URL}/ml-latest-small.zip", None, None,
                ("ratings.csv", "movies.csv"), CSV),
    )
}


class DownloadError(RecsysError):
    """The archive could not be fetched, failed verification, or is malformed."""


def offline_hint(release: Release = ML_1M) -> str:
    """Return what to do without network: a local directory, or a local copy of the archive."""
    fmt = release.fmt
    return (f"Offline? Pass --data-dir DIR, a directory holding {fmt.ratings_file} and {fmt.movies_file} "
            f"(or DIR/{release.name}/), or a local copy of the archive: "
            f"--dataset-url file:///path/to/{release.name}.zip (`download --url` for the download command)")


def _reason(exc: OSError) -> str:
    """Return why a fetch failed in words (``urlopen error [Errno 111] ...`` -> ``Connection refused``)."""
    if getattr(exc, "code", None):  # an HTTPError: the server answered
        return f"HTTP {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def redact_url(url: str) -> str:
    """Return ``url`` without secrets (the contract's redaction, imported only when needed)."""
    from lookup_api.contract.connection import redact_url as redact

    return redact(url)


def is_complete(directory: Path, release: Release = ML_1M) -> bool:
    """Return True when ``directory`` holds every file the release needs."""
    return all((directory / f).is_file() for f in (release.fmt.ratings_file, release.fmt.movies_file))


def find_dataset(data_dir: Path | str, release: Release = ML_1M) -> Path | None:
    """Return where the release's files are: ``data_dir`` itself or ``data_dir/<release>``; else None.

    ``data_dir`` counts as soon as it holds the ratings or the movies file (loading then names
    whichever is missing).
    """
    data_dir = Path(data_dir)
    if (data_dir / release.fmt.ratings_file).is_file() or (data_dir / release.fmt.movies_file).is_file():
        return data_dir
    cached = data_dir / release.name
    return cached if is_complete(cached, release) else None


def require_dataset(data_dir: Path, release: Release = ML_1M, download: bool | None = False) -> None:
    """Refuse a data directory given by hand (``--data-dir``) that lacks the release, unless ``download``.

    The default data directory (or ``RECSYS_DATA_DIR``, a deployment's setting) is downloaded
    into when empty; a path typed by hand may be mistyped, so nothing is created there silently.
    ``download=None``: the command has no ``--download`` (the hint names ``download`` instead).
    """
    if download or find_dataset(data_dir, release) is not None:
        return
    name, ratings = release.name, release.fmt.ratings_file
    fetch = (f"pass --download to fetch {name} into it" if download is not None else
             f"fetch {name} first: recsys-batch download --data-dir {data_dir}")
    raise RecsysError(f"{data_dir} holds no {ratings} (nor {data_dir / name}/{ratings}): check the path, "
                      f"or {fetch}")


def _fetch(url: str, dest: Path, timeout: float, release: Release = ML_1M) -> tuple[str, str]:
    """Stream ``url`` to ``dest``; return its (md5, sha256) hex digests.

    A network failure (no route, refused, unknown host, timeout) says how to go on offline.
    """
    import urllib.request

    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, dest.open("wb") as out:
            expected = resp.headers.get("Content-Length")
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                md5.update(chunk)
                sha.update(chunk)
            received = out.tell()
    except OSError as exc:  # URLError, HTTPError and TimeoutError are OSErrors
        hint = "" if getattr(exc, "code", None) else f". {offline_hint(release)}"  # no hint for a 404
        raise DownloadError(f"download of {redact_url(url)} failed: {_reason(exc)}{hint}") from None
    if expected is not None and received != int(expected):
        raise DownloadError(
            f"download of {redact_url(url)} was truncated: got {received} of {expected} bytes"
        )
    return md5.hexdigest(), sha.hexdigest()


def _published_md5(url: str, dest: Path, timeout: float, release: Release = ML_1M) -> str:
    """Read the md5 GroupLens publishes beside an archive (``<url>.md5``)."""
    _fetch(url + ".md5", dest, timeout, release)
    match = re.search(r"\b[0-9a-f]{32}\b", dest.read_text(errors="replace").lower())
    if not match:
        raise DownloadError(f"{redact_url(url)}.md5 holds no md5 checksum")
    return match.group(0)


def download(
    data_dir: Path | str,
    release: Release = ML_1M,
    *,
    url: str | None = None,
    timeout: float = 60.0,
    force: bool = False,
) -> Path:
    """Download ``release`` into ``data_dir/<name>`` unless already there; return where the files are.

    Files already in ``data_dir`` itself, or in ``data_dir/<name>``, are used as ``run`` uses them
    (:func:`find_dataset`), unless ``force``.  A failed download leaves no directory it created.
    """
    data_dir = Path(data_dir)
    target = data_dir / release.name
    found = find_dataset(data_dir, release)
    if found is not None and not force:
        log.info("%s already present in %s", release.name, found)
        return found
    url = url or release.url
    created = [d for d in (data_dir, *data_dir.parents) if not d.exists()]
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        return _download_into(data_dir, target, release, url, timeout)
    except OSError as exc:  # read-only or full data directory, and the like
        _remove_empty(created)
        raise DownloadError(f"cannot write the dataset under {data_dir}: {exc.strerror or exc}") from None
    except DownloadError:
        _remove_empty(created)
        raise


def _remove_empty(created: list[Path]) -> None:
    """Remove the directories a failed download created (innermost first), as long as they are empty."""
    for directory in created:
        try:
            directory.rmdir()
        except OSError:
            return


def _download_into(data_dir: Path, target: Path, release: Release, url: str, timeout: float) -> Path:
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{release.name}-") as tmp:
        archive = Path(tmp) / "archive.zip"
        log.info("downloading %s", redact_url(url))
        md5, sha = _fetch(url, archive, timeout, release)
        want_md5 = release.md5 or _published_md5(url, Path(tmp) / "archive.md5", timeout, release)
        if md5 != want_md5 or (release.sha256 and sha != release.sha256):
            raise DownloadError(
                f"checksum mismatch for {redact_url(url)}: md5 {md5} (expected {want_md5}), "
                f"sha256 {sha} (expected {release.sha256 or 'not pinned'}); nothing was written"
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
