"""Slow clients cannot starve the API: two slowloris connections against the real ``recsys-api``.

Each slow client sends a request line, then one header line a second, never ending its headers.
With sync workers (main before issue 20) each one holds a whole worker: ``/healthz`` timed out for
the whole test.  Under ``recsys-api`` (threaded workers, a bounded header read) it keeps answering
at once, and each slow client is answered 408 and closed after ``RECSYS_HEADER_TIMEOUT``.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

from tests.deploy_helpers import recsys_api

HEADER_TIMEOUT = 3.0
SLOW_SECONDS = 6.0  # each slow client keeps trailing header lines for this long, unless closed first


def slowloris(url: str, out: dict, stop: threading.Event) -> None:
    """Send one header line a second; record when and how the server ended the connection."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    start = time.monotonic()
    out["received"] = b""
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for i in range(int(SLOW_SECONDS)):
            if stop.wait(1.0):
                break
            sock.sendall(b"X-Slow-%d: y\r\n" % i)
            sock.settimeout(0.01)  # has the server answered and closed meanwhile?
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            finally:
                sock.settimeout(10)
            out["received"] += chunk
            if not chunk or b"408" in out["received"]:
                break
    except OSError as exc:  # reset by the server after its answer
        out["error"] = type(exc).__name__
    out["closed_after"] = time.monotonic() - start
    sock.close()


def probe(url: str, timeout: float = 2.0) -> float:
    """GET /healthz on a fresh connection; return the seconds it took (``timeout`` if it did not answer)."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=timeout) as resp:
            assert resp.status == 200
    except OSError:
        return timeout
    return time.monotonic() - start


def test_two_slowloris_clients_leave_healthz_answering(redis_url, prefix):
    env = {"REDIS_URL": redis_url, "RECSYS_PREFIX": prefix, "RECSYS_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
           "RECSYS_ACCESS_LOG": ""}
    with recsys_api(env, workers=2) as api:
        for _ in range(5):
            probe(api.url)  # warm both workers (first request imports the app's routes)
        stop, results = threading.Event(), [{}, {}]
        slow = [threading.Thread(target=slowloris, args=(api.url, r, stop)) for r in results]
        for t in slow:
            t.start()
        time.sleep(0.5)  # both slow clients have sent their request line: sync workers are now held
        timings = []
        deadline = time.monotonic() + HEADER_TIMEOUT  # while both slow clients are still being read
        while time.monotonic() < deadline:
            timings.append(probe(api.url))
            time.sleep(0.1)
        for t in slow:
            t.join(SLOW_SECONDS + 5)
        stop.set()
    timings.sort()
    median = timings[len(timings) // 2]
    print(f"/healthz during 2 slowloris clients: {len(timings)} probes, median {median:.4f}s, "
          f"max {timings[-1]:.4f}s; slow clients closed after "
          f"{[round(r.get('closed_after', -1), 1) for r in results]}s")
    assert timings[-1] < 0.1, f"/healthz took up to {timings[-1]:.3f}s while two slow clients were connected"
    for r in results:  # each slow client was cut off at the header deadline, with a JSON 408
        assert r["received"].startswith(b"HTTP/1.1 408 "), r
        assert b'"status":408' in r["received"], r
        assert HEADER_TIMEOUT - 0.5 < r["closed_after"] < HEADER_TIMEOUT + 2.5, r
