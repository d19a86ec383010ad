"""How MovieLens releases store their files, and the data error: light (no numpy), for the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lookup_api.contract.errors import RecsysError


@dataclass(frozen=True)
class Format:
    """How a MovieLens release stores its files."""

    kind: str = "dat"  # "dat": '::'-separated, no header; "csv": comma-separated with a header
    encoding: str = "latin-1"  # of movies.dat ("latin-1" or "utf-8"); CSV files are UTF-8
    half_stars: bool = False  # ratings 0.5..5 in steps of 0.5 (else integers 1..5)

    @property
    def ratings_file(self) -> str:
        return f"ratings.{self.kind}"

    @property
    def movies_file(self) -> str:
        return f"movies.{self.kind}"

    @property
    def rating_scale(self) -> tuple[float, float]:
        return (0.5, 5.0) if self.half_stars else (1.0, 5.0)


ML_1M_FORMAT = Format()


class DataError(RecsysError):
    """A dataset file is missing, unreadable or malformed."""

    def __init__(self, path: Path | str, line: int | None, reason: str):
        self.path, self.line, self.reason = Path(path), line, reason
        where = f"{self.path}:{line}" if line else str(self.path)
        super().__init__(f"{where}: {reason}")
