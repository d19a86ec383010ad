"""The run-meta hash, declared once: :class:`RunMeta` and its fields' names.

``<prefix>:run:<run>:meta`` is a flat Redis hash of strings.  Every field is declared here with
its type; :meth:`RunMeta.to_hash` writes the strings (ints as decimal, floats with 3 decimals,
dicts and lists as compact JSON, booleans as ``1``/``0``) and :meth:`RunMeta.from_hash` reads
them back typed.  Nothing outside the contract names a field by a bare string: code refers to
``F.status`` etc. (``tests/test_contract.py`` checks it).  Fields a newer batch wrote and this
code does not know are kept in ``extra`` (strings), so an old reader never drops them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

PENDING, COMPLETE, ABANDONED = "pending", "complete", "abandoned"  # values of ``status``


@dataclass(frozen=True)
class RunMeta:
    """One run's metadata; ``None``: not recorded (the field is absent from the hash)."""

    created_at: str | None = None  # ISO 8601, UTC
    created_ts: float | None = None  # unix seconds
    dataset: str | None = None
    dataset_dir: str | None = None
    dataset_sha256: str | None = None
    n_users: int | None = None  # in the data
    n_items: int | None = None
    n_ratings: int | None = None
    top_n: int | None = None  # the longest list the API serves (its ?n= bound)
    stored_n: int | None = None  # items stored per list: top_n + spare, so filters still fill top_n
    ranker: str | None = None
    params: dict | None = None
    timings: dict | None = None  # stage -> seconds
    peak_rss_mib: dict | None = None  # stage -> MiB
    code_version: str | None = None
    empty_lists: int | None = None  # telemetry (batch/telemetry.py)
    popular_items: int | None = None
    success: bool | None = None
    last_success_ts: float | None = None
    genres: list | None = None  # genres with a per-genre popular list, sorted
    similar_movies: int | None = None  # movies with a "more like this" list
    hidden_at_publish: int | None = None  # hidden titles left out of this run's lists
    shards: int | None = None  # sharded runs: how many score shards
    status: str | None = None  # PENDING, COMPLETE or ABANDONED
    users: int | None = None  # users with a list (the user index's length)
    gate_forced: str | None = None  # why the publish gate refused it (published with --force)
    rolled_back_at: float | None = None  # when `rollback` left this run
    extra: dict = field(default_factory=dict)  # unknown fields, as stored

    def to_hash(self) -> dict[str, str]:
        """Return the fields that are set as the hash's strings."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None:
                continue
            out[f.name] = _encode(value)
        return {**{str(k): str(v) for k, v in self.extra.items()}, **out}

    @classmethod
    def from_hash(cls, raw: Mapping) -> RunMeta:
        """Parse a hash as HGETALL returns it (bytes or str); unknown fields go to ``extra``."""
        text = {_str(k): _str(v) for k, v in raw.items()}
        known, extra = {}, {}
        for name, value in text.items():
            kind = _TYPES.get(name)
            if kind is None:
                extra[name] = value
            else:
                known[name] = _decode(kind, value)
        return cls(**known, extra=extra)

    @classmethod
    def of(cls, meta: RunMeta | Mapping) -> RunMeta:
        """Return ``meta`` as a RunMeta: itself, or a mapping of fields (typed values or stored strings)."""
        if isinstance(meta, RunMeta):
            return meta
        return cls.from_hash({k: v if isinstance(v, str | bytes) else _encode(v) for k, v in meta.items()})

    def with_(self, **changes: Any) -> RunMeta:
        """Return a copy with ``changes``."""
        return replace(self, **changes)

    def as_dict(self) -> dict:
        """Return the set fields, typed (for ``status --json``)."""
        doc = {k: v for k, v in asdict(self).items() if v is not None and k != "extra"}
        return {**self.extra, **doc}

    # the stored form of one field, so ``meta[F.status]`` reads as the hash does
    def __getitem__(self, name: str) -> str:
        return self.to_hash()[name]

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the stored (string) form of field ``name``, or ``default``."""
        return self.to_hash().get(name, default)


class _Fields:
    """``F.status == "status"``: the field names, for HGET/HSET and the few hand-built updates."""

    def __init__(self) -> None:
        for f in fields(RunMeta):
            setattr(self, f.name, f.name)


F = _Fields()
_TYPES = {f.name: f.type for f in fields(RunMeta) if f.name != "extra"}
FIELDS = frozenset(_TYPES)


def field_value(name: str, value: Any) -> str:
    """Return ``value`` of field ``name`` as the hash stores it (for a single HSET)."""
    if name not in FIELDS:
        raise KeyError(f"unknown run-meta field {name!r}")
    return _encode(value)


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _decode(kind: str, value: str) -> Any:
    base = kind.split("|")[0].strip()
    try:
        if base == "int":
            return int(float(value))
        if base == "float":
            return float(value)
        if base == "bool":
            return value not in ("0", "", "false", "False")
        if base in ("dict", "list"):
            return json.loads(value)
    except (ValueError, json.JSONDecodeError):
        return None
    return value


def _str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
