"""Where ``data/`` and the embedded Redis live: one rule for the batch, the CLI and the API.

- Inside a checkout (a directory at or above the working directory holds the ``pyproject.toml``
  that names this project): ``<root>/data``, whatever the working directory is, so
  ``cd lookup_api && uv run recsys-batch status`` sees the run published from the top level.
- Elsewhere (an installed image, no checkout): ``data/`` in the working directory.
- ``RECSYS_DATA_DIR`` (the dataset) and ``RECSYS_EMBEDDED_DIR`` (the embedded server) win over
  both; a relative value is taken from the working directory.  The embedded server's default is
  ``<base>/data/redis`` whatever ``RECSYS_DATA_DIR`` says (a dataset may be mounted read-only).

Stdlib only, and no other project module (the embedded supervisor and the connection helper both
use it); :func:`lookup_api.where.describe` turns the rule into the one line commands log.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tomllib
from pathlib import Path

PROJECT_NAME = "recsys"
DATA_ENV = "RECSYS_DATA_DIR"
EMBEDDED_ENV = "RECSYS_EMBEDDED_DIR"


def project_root(start: Path | str | None = None) -> Path | None:
    """Return the checkout holding ``start`` (default: the working directory), or None outside one."""
    here = Path(start or os.getcwd()).absolute()
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and _names_project(candidate):
            return directory
    return None


def _names_project(pyproject: Path) -> bool:
    try:
        with pyproject.open("rb") as fh:
            return tomllib.load(fh).get("project", {}).get("name") == PROJECT_NAME
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        return False  # unreadable or not ours: keep walking up


def base_dir() -> Path:
    """Return the directory ``data/`` lives in: the checkout's root, else the working directory."""
    return project_root() or Path.cwd()


def data_dir(directory: Path | str | None = None) -> Path:
    """Return the absolute dataset directory: ``directory``, ``$RECSYS_DATA_DIR``, else ``<base>/data``."""
    chosen = directory or os.environ.get(DATA_ENV)
    return Path(chosen).absolute() if chosen else base_dir() / "data"


def embedded_dir(directory: Path | str | None = None) -> Path:
    """Return the embedded server's absolute directory: ``directory``, ``$RECSYS_EMBEDDED_DIR``, else
    ``<base>/data/redis``."""
    chosen = directory or os.environ.get(EMBEDDED_ENV)
    return Path(chosen).absolute() if chosen else base_dir() / "data" / "redis"


class UnsafeDirectory(OSError):
    """A runtime directory another local user could control (not ours, group/world access, a symlink)."""


def private_dir(directory: Path | str, what: str = "runtime directory") -> Path:
    """Create ``directory`` (mode 0700) if missing, then check it as ssh-agent does; return it.

    It must be a real directory (not a symlink), owned by this user, with no group or other
    permission bits; otherwise :class:`UnsafeDirectory` names the problem and nothing is used.
    """
    path = Path(directory)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    info = os.lstat(path)
    problem = ("is a symlink" if stat.S_ISLNK(info.st_mode) else
               "is not a directory" if not stat.S_ISDIR(info.st_mode) else
               f"is owned by uid {info.st_uid}, not {os.getuid()}" if info.st_uid != os.getuid() else
               f"has mode {stat.S_IMODE(info.st_mode):04o}, not 0700" if info.st_mode & 0o077 else None)
    if problem:
        raise UnsafeDirectory(f"refusing {what} {path}: it {problem} (another local user could "
                              "control it); remove it or choose another directory")
    return path
