"""The sharded run's three steps replayed here, as the manifests run them, against a real Redis.

Each step's exact arguments and literal environment from cronjobs/sharded/ (the Secret's and
the ConfigMap's values pointed at the test Redis and prefix, volume paths mapped to local
directories) run in-process through the real CLI: train, then each score pod with the
JOB_COMPLETION_INDEX Kubernetes gives it, then publish.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.deploy_helpers import find, job_spec, rendered_install
from tests.test_deploy_sharded import STEPS, container


@pytest.fixture(scope="module")
def sharded() -> list[dict]:
    return rendered_install("sharded")


def _step_env(c: dict, paths: dict[str, Path], redis_url: str, prefix: str) -> dict[str, str]:
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    env.update(REDIS_URL=redis_url, RECSYS_PREFIX=prefix)  # the Secret's and the ConfigMap's values
    return {k: _local(v, paths) for k, v in env.items()}


def _local(value: str, paths: dict[str, Path]) -> str:
    """A path inside the pod -> the directory standing in for its volume here."""
    for mount, local in paths.items():
        if value == mount or value.startswith(mount + "/"):
            return str(local) + value[len(mount):]
    return value


def test_three_steps_replayed_with_the_manifests_arguments(sharded, small_dir, tmp_path, redis_url, prefix,
                                                           client):
    from batch.cli import cli
    from batch.store import RunStore
    from lookup_api.contract.keys import Keys

    volumes = {"/data": small_dir, "/artifacts": tmp_path / "artifacts", "/tmp": tmp_path / "tmp"}
    (tmp_path / "tmp").mkdir()
    store = RunStore(client, Keys(prefix))

    def pod(name: str, **extra: str):
        c = container(sharded, name)
        for mount in (m["mountPath"] for m in c["volumeMounts"]):
            assert mount in volumes, f"{name} mounts {mount}, which this replay does not provide"
        args = [_local(a, volumes) for a in c["args"]]
        env = {**_step_env(c, volumes, redis_url, prefix), **extra}
        return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)

    trained = pod(STEPS["train"])
    assert trained.exit_code == 0, trained.output
    run_id = json.loads((tmp_path / "artifacts" / "run" / "manifest.json").read_text())["run_id"]
    n = job_spec(find(sharded, "CronJob", STEPS["score"]))["completions"]
    for index in range(n - 1):  # the Indexed Job's pods, JOB_COMPLETION_INDEX set as Kubernetes does
        out = pod(STEPS["score"], JOB_COMPLETION_INDEX=str(index))
        assert out.exit_code == 0 and f"shard {index}/{n}:" in out.output, out.output
    early = pod(STEPS["publish"])
    assert early.exit_code == 1 and f"shard(s) [{n - 1}] of {n} have not finished" in early.output
    assert store.current() is None, "nothing is live before every shard is done"
    assert pod(STEPS["score"], JOB_COMPLETION_INDEX=str(n - 1)).exit_code == 0
    done = pod(STEPS["publish"])
    assert done.exit_code == 0 and f"run {run_id} published: 300 users from {n} shards" in done.output
    assert store.current() == run_id and store.meta(run_id)["shards"] == str(n)
    assert not client.exists(Keys(prefix).lock), "publish released the lease train took"
