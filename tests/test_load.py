"""Load test: gunicorn (2 workers) on loopback + wrk, 30 s at 32 connections, zero errors."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.loadtest import gunicorn, wrk

pytestmark = pytest.mark.slow


@pytest.fixture
def wrk_installed():
    if shutil.which("wrk") is None:  # .ci/run installs it; a dev machine may not have it
        if os.environ.get("CI"):
            pytest.fail("wrk must be installed in CI (.ci/run installs the Debian package)")
        pytest.skip("wrk (Debian package 'wrk') is not installed")


def test_lookup_under_load_has_zero_errors(wrk_installed, publish_small, redis_url, prefix):
    run_id = publish_small()
    env = {"REDIS_URL": redis_url, "RECSYS_PREFIX": prefix}
    with gunicorn("lookup_api:create_app()", env) as url:
        result = wrk(url, seconds=30, connections=32, path="/recommendations/", max_known=300)
    print(f"\n/recommendations under load (run {run_id}): {result['requests']} requests, "
          f"{result['rps']:.0f} req/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
          f"non-2xx {result['non_2xx']}, socket errors {result['socket_errors']}")
    assert result["requests"] > 1000
    assert result["non_2xx"] == 0 and result["socket_errors"] == 0
