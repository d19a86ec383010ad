"""Load test: the shipped server (``recsys-api``: gunicorn, 2 workers x 4 threads) on loopback + wrk
at 32 connections, side by side with a bare Flask endpoint under the same server; zero errors.

Marked ``load`` (and ``slow``): about 2 minutes in all; deselect with ``-m "not load"``.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.loadtest import API, compare, describe, gunicorn, wrk

pytestmark = [pytest.mark.slow, pytest.mark.load]


P99_FACTOR = 10  # generous: the API's p99 within 10x a bare Flask endpoint's, measured in the same run
FILTERS_OF_API = 0.85  # the filters' own cost: req/s with them over the same API's without, paired
# A generous floor against the bare endpoint (the target is 0.85, reported): with filters the
# fast path measured 0.96 on ML-1M (docs/observability.md), the list routes through Flask 0.67 there.
FILTERED_OF_BARE = 0.75
# ... and the server's CPU per filtered request at most 1.2x the bare endpoint's, paired by round (less
# noisy than req/s on a shared machine): the fast path measured 0.9 on the test's data, the Flask path
# 1.2-1.35 (so on this small data the floors catch a gross regression, the benchmark the target).
CPU_OF_BARE = 1.2


@pytest.fixture(scope="module")
def wrk_installed():
    if shutil.which("wrk") is None:  # .ci/run installs it; a dev machine may not have it
        if os.environ.get("CI"):
            pytest.fail("wrk must be installed in CI (.ci/run installs the Debian package)")
        pytest.skip("wrk (Debian package 'wrk') is not installed")


@pytest.fixture(scope="module")
def bare_p99() -> dict:
    """The bare endpoint's p99 measured by the first test (the publish test's reference)."""
    return {}


def test_lookup_and_filters_under_load(wrk_installed, bare_p99, publish_small, redis_url, prefix):
    """Zero errors; exclude= of 10 ids and 20 hidden titles cost at most 15% of the API's req/s.

    The issue's measure: ``recsys-api`` with 2 workers and wrk at 32 connections, side by side with
    the bare endpoint under the same server, rounds alternated (bare, API, API with filters), each
    after a warm-up; ratios are medians over rounds of each round's pair.  The issue's absolute
    target (>= 0.85x bare, p99 <= 25 ms) is reported here and by ``python -m tests.loadtest
    --filters`` (ML-1M); on a shared 2-core machine it is not a pass/fail claim: the filters' own
    cost is, with generous floors against the bare endpoint (req/s and server CPU per request).
    """
    import statistics

    from tests.loadtest import filters, unhide

    run_id = publish_small()
    env = {"REDIS_URL": redis_url, "RECSYS_PREFIX": prefix}
    suffix, hidden = filters(redis_url, prefix)
    try:
        result = compare(env, ["bare", "api", "api+filters"], seconds=8, rounds=3, max_known=300,
                         suffix=suffix, warmup=2, log=lambda line: print(f"\n{line}", end=""))
    finally:
        unhide(redis_url, prefix, hidden)
    bare, plain, filtered = result["bare"], result["api"], result["api+filters"]
    bare_p99["ms"] = bare["p99_ms"]
    pairs = zip(filtered["runs"], plain["runs"], strict=True)
    of_api = statistics.median(f["rps"] / p["rps"] for f, p in pairs)
    cpu = statistics.median(f["server_us"] / b["server_us"] for f, b in zip(filtered["runs"], bare["runs"],
                                                                             strict=True))
    print(f"\nrun {run_id}, medians: bare {bare['rps']:.0f} req/s, p99 {bare['p99_ms']:.1f} ms; API "
          f"{plain['rps']:.0f} ({plain['of_bare']:.2f} of bare), p99 {plain['p99_ms']:.1f} ms; API with "
          f"{len(hidden)} hidden titles and exclude= of 10: {filtered['rps']:.0f} ({filtered['of_bare']:.2f} "
          f"of bare, {of_api:.2f} of the API without filters), p99 {filtered['p99_ms']:.1f} ms; server "
          f"CPU per request {bare['server_us']:.0f} / {plain['server_us']:.0f} / "
          f"{filtered['server_us']:.0f} us (filtered {cpu:.2f}x bare)")
    assert all(r["requests"] > 1000 for r in (*plain["runs"], *filtered["runs"]))
    assert bare["errors"] == plain["errors"] == filtered["errors"] == 0
    assert of_api >= FILTERS_OF_API, [describe(r) for r in (*plain["runs"], *filtered["runs"])]
    assert filtered["of_bare"] >= FILTERED_OF_BARE, [describe(r) for r in (*bare["runs"], *filtered["runs"])]
    assert cpu <= CPU_OF_BARE, [describe(r) for r in (*bare["runs"], *filtered["runs"])]
    for variant in (plain, filtered):
        assert variant["p99_ms"] <= P99_FACTOR * bare["p99_ms"], (variant["p99_ms"], bare["p99_ms"])


def test_publish_under_load_never_mixes_runs(wrk_installed, bare_p99, publish_small, client, redis_url,
                                             prefix):
    """wrk at 64 connections for 40 s; a new run is published mid-test; a checker verifies bodies."""
    import http.client
    import json
    import random
    import threading
    import time
    from urllib.parse import urlparse

    from batch.store import RunStore
    from lookup_api.contract.keys import Keys

    first = publish_small(seed=1)
    env = {"REDIS_URL": redis_url, "RECSYS_PREFIX": prefix}
    seen: list[tuple[str, int, str, list[int]]] = []
    errors: list[str] = []
    stop = threading.Event()

    def checker(base: str) -> None:
        parsed = urlparse(base)
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        rng = random.Random(7)
        while not stop.is_set():
            uid = rng.randint(1, 300) if rng.random() < 0.8 else rng.randint(301, 10**9)
            conn.request("GET", f"/recommendations/{uid}?n=20")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                errors.append(f"{uid}: {resp.status}")
                continue
            doc = json.loads(body)
            seen.append((doc["run_id"], uid, doc["source"], [it["movie_id"] for it in doc["items"]]))

    with gunicorn(API, env) as url:
        thread = threading.Thread(target=checker, args=(url,), daemon=True)
        thread.start()
        result: dict = {}
        load = threading.Thread(target=lambda: result.update(
            wrk(url, seconds=40, connections=64, path="/recommendations/", max_known=300)))
        load.start()
        time.sleep(15)
        second = publish_small(seed=2)  # different seed: different lists, so a mix would show
        load.join(120)
        stop.set()
        thread.join(15)

    store = RunStore(client, Keys(prefix))
    runs = {r for r, *_ in seen}
    assert runs == {first, second}, runs
    expected = {}
    for run_id, uid, source, items in seen:
        key = (run_id, uid)
        if key not in expected:
            stored = store.user_list(run_id, uid)
            expected[key] = ("personalized", stored) if stored else ("popular", store.popular_list(run_id))
        want_source, want = expected[key]
        assert source == want_source and items == [it["movie_id"] for it in want[:20]], (run_id, uid)
    assert any(store.user_list(first, u) != store.user_list(second, u) for u in range(1, 50))
    print(f"\npublish under load: wrk {result['requests']} requests, {result['rps']:.0f} req/s, "
          f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, non-2xx {result['non_2xx']}, "
          f"socket errors {result['socket_errors']}; checker verified {len(seen)} bodies "
          f"({sum(r == second for r, *_ in seen)} from the new run), errors {len(errors)}")
    assert result["non_2xx"] == 0 and result["socket_errors"] == 0 and not errors
    # a batch publish shares the 2 cores during this test: twice the steady-state allowance
    reference = bare_p99.get("ms") or 25.0  # measured by the first test; alone, the target
    assert result["p99_ms"] <= 2 * P99_FACTOR * reference, (result["p99_ms"], reference)
