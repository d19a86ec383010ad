"""SIGTERM to the batch image's PID 1 (``podman stop``): a graceful abort, and the next run starts at once.

The real image, built from the unmodified Dockerfile.batch and run hardened as in tests/test_images.py
(its fixtures: one image build and one Redis container per session module), on real MovieLens 1M.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import REAL_DATA
from tests.deploy_helpers import IMAGES, app_container, find, pod_spec
from tests.images import record
from tests.kube_play import emptydir_tmpfs
from tests.test_images import (  # noqa: F401  (fixtures)
    BATCH,
    HARDENED,
    KEYS,
    NETWORK,
    REDIS,
    _published,
    _run_to_exit,
    images,
    podman,
    store,
)

pytestmark = [pytest.mark.images, pytest.mark.slow]


def test_podman_stop_mid_run_exits_143_releases_the_lock_and_the_next_run_starts_at_once(
        podman, images, store, rendered):  # noqa: F811
    cronjob = find(rendered, "CronJob", "recsys-batch")
    container = app_container(rendered, "CronJob", IMAGES["batch"])

    def start() -> None:
        podman.run("rm", "--force", "--ignore", BATCH, check=False)
        podman("run", "--detach", "--name", BATCH, "--network", NETWORK, *HARDENED,
               *emptydir_tmpfs(pod_spec(cronjob), container), "--volume", f"{REAL_DATA}:/data/ml-1m:ro",
               "--env", f"REDIS_URL=redis://{REDIS}:6379/0", images["batch"], *container["args"])

    before = store.get(KEYS.current)
    start()
    deadline = time.monotonic() + 120
    while not store.exists(KEYS.lock):  # the run took the lock: it is loading, then training
        assert time.monotonic() < deadline, podman.run("logs", BATCH).stderr[-2000:]
        time.sleep(0.2)
    time.sleep(3.0)
    sent = time.monotonic()
    podman("stop", "--time", "30", BATCH, timeout=60)  # SIGTERM to PID 1, SIGKILL after 30 s
    stopped = time.monotonic() - sent
    code = int(podman("inspect", "--format", "{{.State.ExitCode}}", BATCH))
    log = podman.run("logs", BATCH).stdout + podman.run("logs", BATCH).stderr
    record("batch image: podman stop mid-run", stopped, exit_code=code)
    assert code == 143, log[-3000:]
    assert stopped < 10, f"PID 1 took {stopped:.1f}s to stop: SIGTERM ignored?"
    assert "Terminated (SIGTERM)!" in log and "Traceback" not in log
    assert not store.exists(KEYS.lock), "the lock outlived the run"
    assert store.get(KEYS.current) == before

    started = time.monotonic()
    start()  # the retry a Job's backoffLimit gives: no lock to wait for
    again = _run_to_exit(podman, BATCH)
    record("batch image: the run after the stop", time.monotonic() - started, exit_code=again.code)
    assert again.code == 0 and "holds the lock" not in again.log, again.log[-3000:]
    assert _published(store, again.log) != (before or b"").decode()
