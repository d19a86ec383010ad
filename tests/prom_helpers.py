"""Real Prometheus and Pushgateway processes for the observability tests (Debian packages).

``need(binary)`` skips with a one-line reason where a tool is missing, and fails under ``CI``
(``.ci/run`` installs ``prometheus`` and ``prometheus-pushgateway``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import free_port

PACKAGES = {"prometheus": "prometheus", "promtool": "prometheus",
            "prometheus-pushgateway": "prometheus-pushgateway"}


def need(binary: str) -> str:
    """Return the path of ``binary``; skip without it (fail in CI, where it must be installed)."""
    path = shutil.which(binary)
    if path is None:
        reason = f"{binary} is not installed (Debian package '{PACKAGES.get(binary, binary)}')"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs it in CI")
        pytest.skip(reason)
    return path


def get_json(url: str, timeout: float = 5.0) -> dict:
    """GET ``url`` and parse the JSON answer."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wait_ready(url: str, proc: subprocess.Popen, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start (exit {proc.poll()})") from None
            time.sleep(0.1)


@contextmanager
def _process(cmd: list[str], ready_url: str, what: str, log: Path):
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(ready_url, proc, what)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def pushgateway(workdir: Path):
    """Run a Pushgateway on a free loopback port; yield its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [need("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{port}"]
    with _process(cmd, url + "/-/ready", "prometheus-pushgateway", workdir / "pushgateway.log"):
        yield url


class Prometheus:
    """A Prometheus server's base URL and its query API."""

    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list[dict]:
        """Run an instant PromQL query; return the result vector."""
        doc = get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def value(self, expr: str) -> float | None:
        """Return the single value of ``expr`` (None when the vector is empty)."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


@contextmanager
def prometheus(workdir: Path, target: str, interval: str = "1s"):
    """Run Prometheus scraping ``target`` (host:port) every ``interval``, tmp storage; yield it."""
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
        f"scrape_configs:\n  - job_name: recsys-api\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    url = f"http://127.0.0.1:{port}"
    cmd = [need("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{port}"]
    with _process(cmd, url + "/-/ready", "prometheus", workdir / "prometheus.log"):
        yield Prometheus(url)
