"""Load-test harness: the shipped server (``recsys-api``) on loopback + wrk (Debian package ``wrk``).

``python -m tests.loadtest`` measures ``/recommendations/<random id>`` against a bare Flask
endpoint returning constant JSON, under the same server and settings (``recsys-api``'s gunicorn
config: 2 workers x 4 threads, a socket per worker, metrics, the JSON access log), alternated
in rounds, and prints every round and the medians.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port
from tests.deploy_helpers import recsys_api

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


class ServerURL(str):
    """A server's base URL, with the pid of its gunicorn master (``pid``)."""

    pid: int


def cpu_seconds(master: int) -> float:
    """Return the CPU seconds (user + system) used so far by a gunicorn master and its workers."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(stat.parent.name) == master or int(fields[1]) == master:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


API = "lookup_api:create_app()"
BARE = "tests.bare_app:create_app()"
CONFIG = ("-c", "python:lookup_api.gunicorn_conf")  # what recsys-api runs gunicorn with


@contextmanager
def gunicorn(app: str, env: dict[str, str], workers: int = 2, args: tuple[str, ...] = ()):
    """Serve ``app`` as deployed, on a free loopback port; yield its base URL; stop it afterwards.

    The API is the ``recsys-api`` console script itself, any other app gunicorn with the same
    config: same worker class, threads and sockets.  The access log (stdout) goes to /dev/null
    unless ``env`` sets ``RECSYS_ACCESS_LOG``.
    """
    if app == API:
        with recsys_api(env, *args, "--log-level", "warning", workers=workers) as api:
            url = ServerURL(api.url)
            url.pid = api.proc.pid
            yield url
        return
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", *CONFIG, *args, "-w", str(workers), "-b", f"127.0.0.1:{port}",
           "--log-level", "warning", app]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    url = ServerURL(f"http://127.0.0.1:{port}")
    url.pid = proc.pid
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


def describe(r: dict) -> str:
    """One line of wrk figures."""
    return (f"{r['requests']} requests, {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms, non-2xx {r['non_2xx']}, socket errors {r['socket_errors']}"
            + (f", server CPU {r['server_us']:.0f} us/request" if "server_us" in r else ""))


def variants(suffix: str = "") -> dict[str, tuple[str, str | None, dict[str, str], str]]:
    """Return name -> (app, path, extra env, query suffix): the bare endpoint and the API as shipped,
    with ``suffix`` (filters) when given; all under the same server and config."""
    out = {"bare": (BARE, None, {}, ""),
           "api": (API, "/recommendations/", {}, ""),
           "api, metrics off": (API, "/recommendations/", {"RECSYS_METRICS": "false"}, ""),
           "api, Flask path": (API, "/recommendations/", {"RECSYS_FAST_PATH": "false"}, "")}
    if suffix:
        out["api+filters"] = (API, "/recommendations/", {}, suffix)
    return out


def compare(env: dict[str, str], names, seconds: int, rounds: int, connections: int = 32,
            max_known: int = 6040, suffix: str = "", warmup: int = 5, log=print) -> dict[str, dict]:
    """Run each variant of :func:`variants` for ``seconds`` after ``warmup`` seconds of the same load
    (unmeasured: every worker's list cache fills, as on a server that has run for a while),
    alternated in ``rounds``; return name ->
    ``{"runs": [wrk figures], "rps", "p99_ms", "server_us", "errors", "of_bare"}`` (medians;
    ``server_us``: CPU microseconds of the server's processes per request; ``of_bare``: req/s over
    the bare endpoint's, paired by round, median)."""
    table = variants(suffix)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            app, path, extra, query = table[name]
            with gunicorn(app, {**env, **extra}) as url:
                target = url + ("/constant" if path is None else "")
                if warmup:
                    wrk(target, warmup, connections, path=path, max_known=max_known, suffix=query, seed=7)
                before = cpu_seconds(url.pid)
                result = wrk(target, seconds, connections, path=path, max_known=max_known, suffix=query)
                result["server_us"] = (cpu_seconds(url.pid) - before) / max(result["requests"], 1) * 1e6
            runs[name].append(result)
            log(f"{name}: {describe(result)}")
    out = {}
    for name, results in runs.items():
        paired = ([r["rps"] / b["rps"] for r, b in zip(results, runs["bare"], strict=True)]
                  if "bare" in runs else [])
        out[name] = {"runs": results, "rps": statistics.median(r["rps"] for r in results),
                     "p99_ms": statistics.median(r["p99_ms"] for r in results),
                     "server_us": statistics.median(r["server_us"] for r in results),
                     "errors": sum(r["non_2xx"] + r["socket_errors"] for r in results),
                     "of_bare": statistics.median(paired) if paired else None}
    return out


def main() -> None:  # pragma: no cover - a benchmark, run by hand
    """Compare the API (a run must be published under --prefix) with the bare endpoint."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured seconds of load first (0: none)")
    parser.add_argument("--prefix", default="recsys-bench")
    parser.add_argument("--filters", action="store_true",
                        help="also measure exclude= of 10 ids with 20 hidden titles (api+filters)")
    parser.add_argument("--only", nargs="+", metavar="VARIANT", help="measure only these variants "
                        "(bare is always measured: the ratios are to it)")
    args = parser.parse_args()
    env = {"REDIS_URL": args.redis_url, "RECSYS_PREFIX": args.prefix}
    suffix, hidden = filters(args.redis_url, args.prefix) if args.filters else ("", [])
    try:
        names = ["bare", *[v for v in args.only if v != "bare"]] if args.only else list(variants(suffix))
        result = compare(env, names, args.seconds, args.rounds, args.connections, suffix=suffix,
                         warmup=args.warmup)
    finally:
        if hidden:
            unhide(args.redis_url, args.prefix, hidden)
    bare99 = result["bare"]["p99_ms"]
    for name, r in result.items():
        print(f"median {name}: {r['rps']:.0f} req/s ({r['of_bare']:.2f} of bare, paired by round), p99 "
              f"{r['p99_ms']:.2f} ms ({r['p99_ms'] / bare99:.2f} of bare), server CPU {r['server_us']:.0f} "
              f"us/request, errors {r['errors']}")


if __name__ == "__main__":  # pragma: no cover
    main()
