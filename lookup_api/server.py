"""``recsys-api``: the one command that serves the lookup API (gunicorn with the project's config).

    recsys-api                        # 127.0.0.1:8000 ($PORT: 0.0.0.0:$PORT), 2 workers x 4 threads
    recsys-api -w 4 -b 0.0.0.0:8080   # any gunicorn option; it wins over the config

It is exactly ``gunicorn -c python:lookup_api.gunicorn_conf [OPTIONS] 'lookup_api:create_app()'``,
run in this process (PID 1 in the image, so SIGTERM reaches gunicorn).  The config gives
``/metrics`` summed over the workers, a JSON access log, and :class:`Worker`: gunicorn's threaded
worker with a bounded header read time, so slow clients cannot hold every thread.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time

from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import ThreadWorker

APP = "lookup_api:create_app()"
CONFIG = "python:lookup_api.gunicorn_conf"
HEADER_TIMEOUT_ENV = "RECSYS_HEADER_TIMEOUT"
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds from a request's first byte to the end of its headers

log = logging.getLogger(__name__)


def header_timeout() -> float:
    """Return the bound on reading one request's headers: ``$RECSYS_HEADER_TIMEOUT`` seconds (default 10)."""
    value = os.environ.get(HEADER_TIMEOUT_ENV)
    try:
        seconds = float(value) if value else DEFAULT_HEADER_TIMEOUT
    except ValueError:
        raise SystemExit(f"{HEADER_TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise SystemExit(f"{HEADER_TIMEOUT_ENV} must be > 0 (got {value})")
    return seconds


class HeaderTimeout(NoMoreData):
    """The client did not finish its request headers in time (gunicorn closes the connection)."""


class _DeadlineSocket:
    """A client socket whose reads fail once ``deadline`` (monotonic) has passed; else the socket itself."""

    def __init__(self, sock: socket.socket):
        self._sock, self.deadline, self.expired = sock, None, False

    def recv(self, size: int, *flags) -> bytes:
        """Read like ``socket.recv``, but raise :class:`HeaderTimeout` past the deadline."""
        if self.deadline is None:
            return self._sock.recv(size, *flags)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.expired = True
            raise HeaderTimeout(b"")
        prior = self._sock.gettimeout()
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(size, *flags)
        except TimeoutError:
            self.expired = True
            raise HeaderTimeout(b"") from None
        finally:
            self._sock.settimeout(prior)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class Worker(ThreadWorker):
    """gunicorn's ``gthread`` worker; each request's headers must arrive within :func:`header_timeout`.

    gthread already keeps idle connections in its poller, off the threads; but a client that has
    sent a first byte holds a thread until its headers end, and one header line a second (slowloris)
    holds it for ever.  Here the headers get a deadline, then the connection is answered 408 and closed.
    """

    def init_process(self) -> None:
        """Read the header timeout, then start the worker loop."""
        self.header_timeout = header_timeout()
        super().init_process()

    def handle(self, conn):
        """Handle one request on ``conn`` with a deadline on its headers (plain HTTP/1.x only)."""
        if self.cfg.is_ssl:  # TLS wraps the raw socket: bounded by the proxy in front instead
            return super().handle(conn)
        if not isinstance(conn.sock, _DeadlineSocket):
            conn.sock = _DeadlineSocket(conn.sock)
        conn.sock.deadline, conn.sock.expired = time.monotonic() + self.header_timeout, False
        result = super().handle(conn)
        if conn.sock.expired:
            log.debug("closed %s: headers took longer than %ss", conn.client, self.header_timeout)
            self._request_timeout(conn)
        return result

    def handle_request(self, req, conn):
        """Serve a request whose headers arrived: the body and the response are not bounded here."""
        if isinstance(conn.sock, _DeadlineSocket):
            conn.sock.deadline = None
        return super().handle_request(req, conn)

    @staticmethod
    def _request_timeout(conn) -> None:
        body = b'{"error":"request headers not received in time","status":408}'
        head = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        try:
            conn.sock.settimeout(1.0)
            conn.sock.sendall(head + body)
        except OSError:
            pass  # the client is gone: nothing to tell it


def main(argv: list[str] | None = None) -> None:
    """Run gunicorn with the project's config; extra arguments are gunicorn's (they win)."""
    from gunicorn.app.wsgiapp import WSGIApplication

    args = list(sys.argv[1:] if argv is None else argv)
    header_timeout()  # a bad value stops here, before any worker starts
    sys.argv = ["recsys-api", "-c", CONFIG, *args, APP]
    WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="recsys-api").run()


if __name__ == "__main__":
    main()
