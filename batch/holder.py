"""Who holds the batch lock: the lock's value names its holder, and says whether it is alive.

The value is one compact JSON object, written when the lock is taken and compared whole by the
store's scripts (it is the token): ``host``, ``pid``, ``ns`` (kernel boot and pid namespace,
where ``pid`` means something), ``start`` (the process's start time, which tells a reused pid
apart), ``command``, ``since``, ``ttl`` and ``lease`` (a sharded run's lock, held between its
steps).  The last heartbeat is not stored: every renewal resets the expiry to ``ttl``, so it is
``ttl`` minus the time left.  No Redis in here.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lookup_api.contract.connection import redact_url

HEARTBEAT = 10.0  # seconds between renewals at most (ttl / 3 when that is shorter)
MISSED = 3  # a holder that missed this many heartbeats in a row is taken for dead


def beat_interval(ttl: float) -> float:
    """Return the seconds between two renewals of a lock taken for ``ttl`` seconds."""
    return min(ttl / 3, HEARTBEAT)


def _namespace() -> str | None:
    """Return this kernel boot and pid namespace (pids mean the same only within one), or None."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """Return when process ``pid`` started (clock ticks after boot), or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # the name may hold spaces
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])  # a zombie is dead; field 22: start


def command_line(argv: list[str] | None = None) -> str:
    """Return this process's command line, URLs redacted (``recsys-batch run --keep 2``)."""
    argv = sys.argv if argv is None else argv
    words = [Path(argv[0]).name if argv else "python"]
    words += [redact_url(a) if "://" in a else a for a in argv[1:]]
    return shlex.join(words)[:200]


def new_token(ttl: float, *, lease: bool = False, command: str | None = None) -> str:
    """Return a fresh lock value naming this process as the holder."""
    pid = os.getpid()
    doc = {"id": secrets.token_hex(4), "host": socket.gethostname(), "pid": pid, "ns": _namespace(),
           "start": _start_ticks(pid), "command": command or command_line(),
           "since": round(time.time(), 3), "ttl": ttl, "lease": lease}
    return json.dumps(doc, separators=(",", ":"))


@dataclass(frozen=True)
class Holder:
    """The holder a lock value names, and the lock's remaining time (``left``, seconds)."""

    raw: str
    left: float
    doc: dict

    @classmethod
    def parse(cls, raw: str, left: float) -> Holder:
        """Read a lock value (a value this code did not write names an unknown holder)."""
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        return cls(raw, left, doc if isinstance(doc, dict) and "pid" in doc and "ttl" in doc else {})

    @property
    def lease(self) -> bool:
        return bool(self.doc.get("lease"))

    def heartbeat_age(self) -> float | None:
        """Seconds since the holder last renewed the lock (None for an unknown holder)."""
        return max(float(self.doc["ttl"]) - self.left, 0.0) if self.doc else None

    def alive_here(self) -> bool | None:
        """True/False: the holder's process is alive, checked on this host; None: it is elsewhere."""
        if not self.doc or self.doc.get("ns") is None or self.doc["ns"] != _namespace():
            return None
        started = _start_ticks(int(self.doc["pid"]))
        return started is not None and started == self.doc.get("start", started)

    def state(self) -> str:
        """Return ``live``, ``dead`` (gone: safe to take over or clear) or ``idle`` (a lease between steps).

        A holder on this host is as alive as its process; elsewhere, alive while it renews the lock.
        A lease is never dead (its steps are separate processes), only idle when nobody renews it;
        an unknown holder is taken for live.
        """
        if not self.doc:
            return "live"
        age = self.heartbeat_age()
        beating = age <= MISSED * beat_interval(float(self.doc["ttl"])) + 1
        if self.lease:
            return "live" if beating else "idle"
        here = self.alive_here()
        return ("live" if here else "dead") if here is not None else ("live" if beating else "dead")

    def describe(self) -> str:
        """Return ``recsys-batch run (pid 42 on host h, since 02:00:01 UTC, last heartbeat 3s ago)``."""
        if not self.doc:
            return f"an unknown holder ({self.raw[:60]!r})"
        since = datetime.fromtimestamp(float(self.doc["since"]), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        what = "the lease of a sharded run, taken by " if self.lease else ""
        return (f"{what}`{self.doc.get('command')}` (pid {self.doc['pid']} on host {self.doc.get('host')}, "
                f"since {since}, last heartbeat {self.heartbeat_age():.0f}s ago)")


def locked_message(key: str, holder: Holder) -> str:
    """Return why a run cannot take the lock ``key`` from ``holder``, and what to do (one line)."""
    expires = f"it expires in {holder.left:.0f}s unless renewed"
    state = holder.state()
    if state == "idle":
        return (f"{holder.describe()} holds the lock {key} between its steps ({expires}): finish that run "
                "(score, publish), or clear the lock with `recsys-batch unlock`")
    if state == "dead":
        return (f"{holder.describe()} holds the lock {key}, but its run looks dead (no heartbeat): "
                f"{expires}, or clear it now with `recsys-batch unlock`")
    return (f"{holder.describe()} holds the lock {key}: another batch run is in progress ({expires}); "
            "not starting a second one")
