"""``recsys-api`` spreads kept-alive connections over its workers, and refuses a port in use.

On one listening socket shared by the workers (gunicorn's default), the worker the kernel wakes
first accepts nearly every connection: 32 kept-alive clients (a load balancer's pool, wrk) all
landed on one of two workers, which then served them on one core while the other idled.  With a
socket per worker (SO_REUSEPORT) the kernel spreads connections by their address hash.  That same
option would let a second server on the port share it silently: it must refuse instead.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections import Counter

from tests.deploy_helpers import RECSYS_API, recsys_api

CONNECTIONS, REQUESTS = 32, 5


def test_kept_alive_connections_are_spread_over_the_workers(tmp_path):
    log = tmp_path / "access.log"
    with recsys_api({"RECSYS_ACCESS_LOG": str(log)}) as api:
        host, port = api.url.removeprefix("http://").split(":")
        conns = [http.client.HTTPConnection(host, int(port), timeout=10) for _ in range(CONNECTIONS)]
        for conn in conns:
            conn.connect()  # all open before any request: none waits for another to finish
        errors: list[str] = []

        def use(conn: http.client.HTTPConnection) -> None:
            for _ in range(REQUESTS):  # HTTP/1.1: the same connection, kept alive
                conn.request("GET", "/healthz?from=test")  # the start-up probe's lines have no query
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors.append(str(resp.status))

        threads = [threading.Thread(target=use, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for conn in conns:
            conn.close()
        time.sleep(0.5)  # the access log is written after each response
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    per_worker = Counter(line["pid"] for line in lines if line["query"] == "from=test")
    print(f"\nrequests per worker pid over {CONNECTIONS} kept-alive connections: {dict(per_worker)}")
    assert not errors and sum(per_worker.values()) == CONNECTIONS * REQUESTS
    # By address hash, each of 2 workers gets Binomial(32, 1/2) connections: below 6 has p < 1e-4.
    assert len(per_worker) == 2 and min(per_worker.values()) >= 6 * REQUESTS, per_worker


def test_a_second_server_on_the_same_port_refuses_to_start():
    with recsys_api({}) as first:
        port = int(first.url.rsplit(":", 1)[1])
        second = subprocess.run([str(RECSYS_API), "-w", "1", "-b", f"127.0.0.1:{port}"], capture_output=True,
                                text=True, timeout=60, env={**os.environ})
        assert second.returncode == 1, second.stderr[-2000:]
        assert f"recsys-api: cannot listen on 127.0.0.1:{port}: Address already in use" in second.stderr
        with urllib.request.urlopen(first.url + "/healthz", timeout=5) as resp:  # the first one still serves
            assert resp.status == 200
    assert first.proc.returncode is not None
