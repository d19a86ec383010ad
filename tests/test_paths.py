"""Where data/ and the embedded Redis live (issue 22 #1): the same from any directory of a checkout.

The rule (:mod:`lookup_api.paths`): inside a checkout, ``<root>/data``; elsewhere the working
directory's ``data/``; ``RECSYS_DATA_DIR`` / ``RECSYS_EMBEDDED_DIR`` win.  The end-to-end test runs
the real commands in a scratch checkout: ``run`` at the top level, then ``status``, ``embedded
start`` and ``recsys-api`` from a subdirectory all find that run on the one embedded server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from lookup_api import embedded_redis, paths, where
from tests.deploy_helpers import recsys_api

RECSYS_BATCH = str(Path(sys.executable).parent / "recsys-batch")
SMALL = ["--top-n", "20", "--candidates", "20", "--content-candidates", "5", "--als-factors", "8",
         "--svd-factors", "8", "--popularity-min-count", "5"]
UNSET = ("REDIS_URL", "RECSYS_DATA_DIR", "RECSYS_EMBEDDED_DIR", "RECSYS_PREFIX", "PROMETHEUS_MULTIPROC_DIR")


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A scratch checkout: a pyproject.toml naming this project, and a subdirectory in it."""
    root = tmp_path / "checkout"
    (root / "lookup_api" / "deeper").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "recsys"\nversion = "0"\n')
    return root


@pytest.fixture
def no_overrides(monkeypatch):
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)


def test_inside_a_checkout_data_is_at_its_root_whatever_the_directory(checkout, monkeypatch, no_overrides):
    for cwd in (checkout, checkout / "lookup_api", checkout / "lookup_api" / "deeper"):
        monkeypatch.chdir(cwd)
        assert paths.project_root() == checkout
        assert paths.data_dir() == checkout / "data"
        assert embedded_redis.embedded_dir() == checkout / "data" / "redis"


def test_outside_a_checkout_data_is_in_the_working_directory(tmp_path, monkeypatch, no_overrides):
    other = tmp_path / "elsewhere"
    other.mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "another-project"\n')  # not ours: skipped
    monkeypatch.chdir(other)
    assert paths.project_root() is None
    assert paths.data_dir() == other / "data" and paths.embedded_dir() == other / "data" / "redis"


def test_the_environment_wins_and_relative_values_are_made_absolute(checkout, monkeypatch, no_overrides):
    monkeypatch.chdir(checkout / "lookup_api")
    monkeypatch.setenv("RECSYS_DATA_DIR", "mine")
    monkeypatch.setenv("RECSYS_EMBEDDED_DIR", "/srv/recsys-redis")
    assert paths.data_dir() == checkout / "lookup_api" / "mine"
    assert paths.embedded_dir() == Path("/srv/recsys-redis")
    assert paths.data_dir("/typed") == Path("/typed")  # a path given by the caller wins over both


def test_describe_is_one_line_with_absolute_paths_and_no_password(checkout, monkeypatch, no_overrides):
    monkeypatch.chdir(checkout / "lookup_api")
    line = where.describe()
    socket = checkout / "data" / "redis" / "redis.sock"
    assert line == f"data: {checkout / 'data'} · redis: embedded, unix socket {socket}"
    line = where.describe(redis_url="redis://:s3cret@cache:6379/0")
    assert line == f"data: {checkout / 'data'} · redis: redis://:***@cache:6379/0" and "s3cret" not in line


def batch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return subprocess.run([RECSYS_BATCH, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_a_run_published_at_the_top_is_seen_from_a_subdirectory(checkout, small_dir):
    """`run` at the root; `status`, `embedded start` and `recsys-api` in lookup_api/ find it."""
    sub = checkout / "lookup_api"
    try:
        ran = batch(["run", "--data-dir", str(small_dir), *SMALL], checkout)
        assert ran.returncode == 0, ran.stderr
        run_id = re.search(r"^run (\S+) published", ran.stdout, re.M).group(1)
        status = batch(["status"], sub)
        assert status.returncode == 0, status.stderr
        assert run_id in status.stdout and "no live run" not in status.stdout, status.stdout
        pid = embedded_redis.Embedded(checkout / "data" / "redis").pid()
        started = batch(["embedded", "start"], sub)  # the same server, not a second one in lookup_api/data
        assert started.returncode == 0 and "started the embedded" not in started.stderr, started.stderr
        assert embedded_redis.Embedded(checkout / "data" / "redis").pid() == pid
        blank = {k: "" for k in ("REDIS_URL", "RECSYS_DATA_DIR", "RECSYS_EMBEDDED_DIR")}  # the default rule
        with recsys_api(blank, workers=1, cwd=sub) as api, \
                urllib.request.urlopen(api.url + "/readyz", timeout=5) as resp:
            assert json.load(resp)["reason"] == f"live run {run_id}"
        assert f"recsys-api: data: {checkout / 'data'} · redis: embedded, unix socket " \
               f"{checkout}/data/redis/redis.sock" in api.stderr, api.stderr
        assert not (sub / "data").exists(), "nothing may appear under the subdirectory"
    finally:
        embedded_redis.stop(checkout / "data" / "redis")
