"""Load-test harness: gunicorn on loopback + wrk (Debian package ``wrk``), bounded in time.

``python -m tests.loadtest`` measures ``/recommendations/<random id>`` against a bare Flask
endpoint returning constant JSON, same gunicorn settings, in one run, and prints both.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]

# Random user ids: 1..max_known are published, the rest are unknown (popular fallback).
WRK_SCRIPT = """
math.randomseed(%(seed)d)
local counter = 0
request = function()
  counter = counter + 1
  local uid
  if math.random() < %(known)f then uid = math.random(1, %(max_known)d)
  else uid = math.random(%(max_known)d + 1, 2000000000) end
  return wrk.format("GET", "%(path)s" .. uid .. "?n=" .. math.random(1, 10) .. "%(suffix)s")
end
"""


@contextmanager
def gunicorn(app: str, env: dict[str, str], workers: int = 2, threads: int = 1, args: tuple[str, ...] = ()):
    """Run ``gunicorn [args] app`` on a free loopback port; yield its base URL; stop it afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", *args, "-w", str(workers), "--threads", str(threads),
           "-b", f"127.0.0.1:{port}", "--log-level", "warning", app]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


def wrk(url: str, seconds: int, connections: int, path: str | None = None, max_known: int = 300,
        known: float = 0.8, seed: int = 42, suffix: str = "") -> dict:
    """Run wrk against ``url`` (random user ids when ``path`` is set, ``suffix`` appended to each
    query, e.g. ``&exclude=1,2``); return parsed figures."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian package 'wrk')")
    cmd = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", "--timeout", "5s"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        if path:
            fh.write(WRK_SCRIPT % {"seed": seed, "known": known, "max_known": max_known, "path": path,
                                   "suffix": suffix})
        script = fh.name
    try:
        out = subprocess.run([*cmd, "-s", script, url], capture_output=True, text=True,
                             timeout=seconds + 60, check=True).stdout
    finally:
        os.unlink(script)
    return parse_wrk(out)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out: str) -> dict:
    """Extract requests, req/s, p50/p99 latency (ms), non-2xx and socket errors from wrk output."""
    pct = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": pct.get("50"),
        "p99_ms": pct.get("99"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, socket.groups())) if socket else 0,
        "raw": out,
    }


def filters(redis_url: str, prefix: str, n_exclude: int = 10, n_hidden: int = 20) -> tuple[str, list[int]]:
    """Hide the live run's ``n_hidden`` most popular titles; return the query suffix excluding the
    next ``n_exclude`` (so both filters drop items from most lists), and the hidden ids."""
    import redis

    from batch.store import RunStore
    from lookup_api.contract.keys import Keys

    store = RunStore(redis.Redis.from_url(redis_url), Keys(prefix))
    popular = [it["movie_id"] for it in store.popular(store.current())]
    hidden = popular[:n_hidden]
    store.hide(hidden, "load test")
    return "&exclude=" + ",".join(map(str, popular[n_hidden : n_hidden + n_exclude])), hidden


def unhide(redis_url: str, prefix: str, hidden: list[int]) -> None:
    """Serve again what :func:`filters` hid."""
    import redis

    from batch.store import RunStore
    from lookup_api.contract.keys import Keys

    RunStore(redis.Redis.from_url(redis_url), Keys(prefix)).unhide(hidden)


def main() -> None:  # pragma: no cover - a benchmark, run by hand
    """Publish ML-1M (or small data), then compare the API with a bare endpoint."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefix", default="recsys-bench")
    parser.add_argument("--filters", action="store_true",
                        help="also measure exclude= of 10 ids with 20 hidden titles (api+filters)")
    args = parser.parse_args()
    env = {"REDIS_URL": args.redis_url, "RECSYS_PREFIX": args.prefix}
    suffix = ""
    if args.filters:
        suffix, hidden = filters(args.redis_url, args.prefix)
    conf = ("-c", "python:lookup_api.gunicorn_conf")  # the README's command: metrics, JSON access log
    access_log = Path(tempfile.mkdtemp(prefix="recsys-loadtest-")) / "access.log"
    api = "lookup_api:create_app()"
    variants = (("bare", "tests.bare_app:create_app()", None, (), {}),  # name, app, path, gunicorn args, env
                ("api", api, "/recommendations/", (), {"RECSYS_METRICS": "false"}),  # metrics off
                ("api+metrics", api, "/recommendations/", conf, {"RECSYS_ACCESS_LOG": ""}),
                ("api+metrics+log", api, "/recommendations/", conf, {"RECSYS_ACCESS_LOG": str(access_log)}),
                *((("api+filters", api, "/recommendations/", conf, {"RECSYS_ACCESS_LOG": ""}),)
                  if suffix else ()))
    results = {name: [] for name, *_ in variants}
    for _ in range(args.rounds):
        for name, app, path, gargs, extra in variants:
            with gunicorn(app, {**env, **extra}, args=gargs) as url:
                results[name].append(wrk(url + ("/constant" if path is None else ""), args.seconds,
                                         args.connections, path=path, max_known=6040,
                                         suffix=suffix if name == "api+filters" else ""))
    shutil.rmtree(access_log.parent)
    if suffix:
        unhide(args.redis_url, args.prefix, hidden)
    for name, runs in results.items():
        for r in runs:
            print(f"{name}: {r['requests']} requests, {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
                  f"p99 {r['p99_ms']:.2f} ms, non-2xx {r['non_2xx']}, socket errors {r['socket_errors']}")
    import statistics

    bare = statistics.median(r["rps"] for r in results["bare"])
    for name, runs in results.items():
        rps, p99 = statistics.median(r["rps"] for r in runs), statistics.median(r["p99_ms"] for r in runs)
        errors = sum(r["non_2xx"] + r["socket_errors"] for r in runs)
        bare99 = statistics.median(r["p99_ms"] for r in results["bare"])
        print(f"median {name}: {rps:.0f} req/s ({rps / bare:.2f} of bare), p99 {p99:.2f} ms "
              f"({p99 / bare99:.2f} of bare), errors {errors}")


if __name__ == "__main__":  # pragma: no cover
    main()
