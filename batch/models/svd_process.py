"""Fit SVD in a child process, side by side with ALS in this one.

surprise's SGD iterates a Python generator, so it holds the GIL for its whole fit: a thread
cannot overlap it with anything.  A spawned child has its own interpreter (and is the only
process that imports surprise), while implicit's ALS solver releases the GIL and uses this
process's cores.  The child is started before the data is loaded, so its imports overlap the
load; it ignores Ctrl-C and SIGTERM (the parent handles them and kills the child, which holds
nothing worth a clean exit).  The fitted model is
the same as an in-process fit with the same seed, array for array.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from typing import Any

log = logging.getLogger(__name__)


def _serve(conn) -> None:
    """Child: import surprise, fit the one SVD job sent over ``conn``, send back the model."""
    for signum in (signal.SIGINT, signal.SIGTERM):  # sent to the process group too: the parent decides
        signal.signal(signum, signal.SIG_IGN)
    import surprise  # noqa: F401  (warm: the import overlaps the parent's data load)

    from batch.models.svd import train_svd

    try:
        args, kwargs = conn.recv()
    except EOFError:  # the parent went away or decided to fit in-process
        return
    started = time.perf_counter()
    try:
        model, _ = train_svd(*args, **kwargs)
        reply = ("ok", model, time.perf_counter() - started)
    except Exception as exc:  # sent back and raised in the parent
        reply = ("error", exc, 0.0)
    try:
        conn.send(reply)
    except OSError:  # e.g. a broken pipe: the parent stopped waiting (Ctrl-C, an error); nobody to tell
        pass
    finally:
        conn.close()


class SVDProcess:
    """A child process that fits one SVD; use as a context manager (the child never outlives it)."""

    def __init__(self) -> None:
        self._conn = self._proc = None
        self.fit_seconds: float | None = None
        if (os.cpu_count() or 1) < 2:
            return  # nothing to overlap with on one core
        try:
            ctx = multiprocessing.get_context("spawn")
            self._conn, child = ctx.Pipe()
            self._proc = ctx.Process(target=_serve, args=(child,), name="recsys-svd", daemon=True)
            self._proc.start()
            child.close()
        except OSError as exc:  # e.g. no /dev/shm: fit in-process instead
            log.warning("cannot start the SVD process (%s); fitting SVD in-process", exc)
            self._conn = self._proc = None

    def __enter__(self) -> SVDProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def active(self) -> bool:
        """True while a child is there to fit SVD."""
        return self._proc is not None

    def done(self) -> bool:
        """True once the child has sent its result (or is gone): its core is free."""
        return self._conn is None or self._conn.poll()

    def submit(self, *args: Any, **kwargs: Any) -> None:
        """Send ``train_svd``'s arguments to the child (returns at once)."""
        self._conn.send((args, kwargs))

    def result(self):
        """Wait for the child and return the fitted :class:`~batch.models.svd.SVDModel`."""
        try:
            status, value, seconds = self._conn.recv()
        except EOFError:
            code = self._proc.exitcode if self._proc else None
            raise RuntimeError(f"the SVD process died (exit code {code})") from None
        finally:
            self.close()
        if status == "error":
            raise value
        self.fit_seconds = seconds
        return value

    def close(self) -> None:
        """Stop the child if it is still running (SIGKILL: it ignores SIGTERM)."""
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            self._proc.join(timeout=0.5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        self._conn = self._proc = None
