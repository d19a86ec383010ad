"""The Redis key schema: the one contract between the batch job and the lookup API.

Standard library only, so both processes import it without pulling in each
other's dependencies.  Every key the project reads or writes is built here.

    <prefix>:current                   string  id of the live run (flipped last, one SET)
    <prefix>:runs                      zset    run id -> created_at (unix seconds)
    <prefix>:lock:{<prefix>:current}   string  the batch lock (with expiry): JSON naming its holder
                                               (host, pid, command, since; batch/holder.py); hash-tagged
                                               into the slot of ``current`` so one script checks it and flips
    <prefix>:pending                   zset    runs being written (orphans if their batch died)
    <prefix>:run:<run>:meta            hash    run metadata (flat strings; JSON for nested values)
    <prefix>:run:<run>:catalog         string  JSON {"<movie_id>": [title, [genres]]}: stored once per run
    <prefix>:run:<run>:popular         string  JSON list of items
    <prefix>:run:<run>:users           string  JSON array of the user ids that have a list
    <prefix>:run:<run>:shards          hash    shard index -> lists written (sharded runs only)
    <prefix>:run:<run>:user:<user_id>  string  JSON list of items, best first
    <prefix>:run:<run>:popular:<genre> string  JSON list of items: the popular rule within one genre
    <prefix>:run:<run>:similar:<movie> string  JSON list of items: "more like this" for one movie
    <prefix>:hidden                    hash    movie id -> JSON {"reason", "at"}: titles hidden by the
                                               operator (``hide``/``unhide``), in no run; the API drops
                                               them at read time, the next run does not publish them

Lists hold items in the format of :mod:`lookup_api.contract.items` (ids and scores; titles and
genres in the run's catalog).  User and movie ids are
1..``MAX_ID`` everywhere: the batch refuses others at load, ``show`` and the API answer 400.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

DEFAULT_PREFIX = "recsys"
DEFAULT_KEEP = 2
MAX_ID = 2**31 - 1  # the largest user or movie id (a signed 32-bit integer, as in most clients' schemas)
PREFIX_RE = re.compile(r"^(?=.)[A-Za-z0-9_.\-]*(\{[A-Za-z0-9_.\-]+\})?[A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Keys:
    """Build key names under one prefix (``recsys`` by default)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not PREFIX_RE.match(self.prefix):
            raise ValueError(f"invalid key prefix {self.prefix!r}: use letters, digits, _ . - and at "
                             "most one {hash tag}")

    @property
    def current(self) -> str:
        """The live run id (string)."""
        return f"{self.prefix}:current"

    @property
    def runs(self) -> str:
        """Complete runs by creation time (sorted set)."""
        return f"{self.prefix}:runs"

    @property
    def lock(self) -> str:
        """The batch lock (string with expiry), in the Redis Cluster slot of :attr:`current`.

        Its hash tag is the prefix's own ``{tag}`` if it has one, else ``{<prefix>:current}`` (the
        whole name of ``current``), so one Lua script can check the lock and flip ``current``.
        """
        return f"{self.prefix}:lock:{{{self.current}}}"

    @property
    def pending(self) -> str:
        """Runs being written (sorted set)."""
        return f"{self.prefix}:pending"

    def run_base(self, run_id: str) -> str:
        """Return the prefix of every key of one run."""
        return f"{self.prefix}:run:{run_id}"

    def meta(self, run_id: str) -> str:
        """Return the run's metadata hash key."""
        return f"{self.run_base(run_id)}:meta"

    def popular(self, run_id: str) -> str:
        """Return the run's popular-list key."""
        return f"{self.run_base(run_id)}:popular"

    def users(self, run_id: str) -> str:
        """Return the run's user-index key."""
        return f"{self.run_base(run_id)}:users"

    def shards(self, run_id: str) -> str:
        """Return the run's completed-shards hash key (sharded runs)."""
        return f"{self.run_base(run_id)}:shards"

    def user(self, run_id: str, user_id: int) -> str:
        """Return the key of one user's list in one run."""
        return f"{self.run_base(run_id)}:user:{int(user_id)}"

    def catalog(self, run_id: str) -> str:
        """Return the run's catalog key (titles and genres, stored once for all its lists)."""
        return f"{self.run_base(run_id)}:catalog"

    def genre_popular(self, run_id: str, genre: str) -> str:
        """Return the key of the run's popular list within ``genre`` (a name as in ``movies.dat``)."""
        return f"{self.popular(run_id)}:{genre}"

    def similar(self, run_id: str, movie_id: int) -> str:
        """Return the key of one movie's "more like this" list in one run."""
        return f"{self.run_base(run_id)}:similar:{int(movie_id)}"

    @property
    def hidden(self) -> str:
        """Titles hidden by the operator (hash: movie id -> JSON reason and time); belongs to no run."""
        return f"{self.prefix}:hidden"

    def run_pattern(self, run_id: str) -> str:
        """Return a SCAN MATCH pattern covering every key of one run."""
        return f"{self.run_base(run_id)}:*"


def new_run_id(now: datetime | None = None) -> str:
    """Return a fresh, time-sortable run id such as ``20261126T020000Z-3f9a``."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(2)}"

