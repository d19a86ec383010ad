"""The images' installs, replayed without Docker: their lock, their extra, their commands.

Each Dockerfile's builder stage is replayed in a temp dir: the files it COPYs, then its
``uv sync`` commands verbatim, into a fresh virtualenv (what becomes ``/opt/venv``).  Then:
the API's virtualenv holds no batch library; every shared library either virtualenv's extension
modules link is bundled, in the slim base, or installed by the runtime stage; and the images'
commands run: the API's exact CMD under gunicorn (``/healthz``, ``/readyz``, HEALTHCHECK,
SIGTERM), and the CronJob's exact ``recsys-batch run`` publishing a run that gunicorn then serves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.deploy_helpers import (
    BASE_IMAGE_LIBS,
    HEAVY,
    IMAGES,
    ROOT,
    RUNTIME_PACKAGE_LIBS,
    app_container,
    apt_installs,
    builder_and_runtime,
    copy_sources,
    render_without_kubectl,
    uv_sync_commands,
)

pytestmark = pytest.mark.slow


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the dev virtualenv (and without any Python path hints)."""
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(ROOT / ".venv")))
    env.update(extra)
    return env


def replay_builder(kind: str, workdir: Path) -> Path:
    """Build the virtualenv exactly as Dockerfile.<kind>'s builder stage builds /opt/venv."""
    uv = shutil.which("uv")
    if not uv:
        pytest.skip("uv not on PATH")
    builder, _ = builder_and_runtime(kind)
    context = workdir / "src"
    context.mkdir()
    for src in copy_sources(builder):
        if (ROOT / src).is_dir():
            shutil.copytree(ROOT / src, context / src, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / src, context / src)
    venv = workdir / "venv"
    env = _clean_env(**{k: v for k, v in builder.env().items() if k.startswith("UV_")})
    # the image's interpreter is /usr/local/bin/python3; here, the one running the tests
    env.update(UV_PROJECT_ENVIRONMENT=str(venv), UV_PYTHON=sys._base_executable)
    syncs = uv_sync_commands(builder)
    assert syncs, f"Dockerfile.{kind} runs no uv sync"
    for argv in syncs:
        out = subprocess.run([uv, *argv[1:]], cwd=context, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, f"{' '.join(argv)} failed:\n{out.stderr}"
    return venv


@pytest.fixture(scope="module")
def api_venv(tmp_path_factory) -> Path:
    return replay_builder("api", tmp_path_factory.mktemp("api-image"))


@pytest.fixture(scope="module")
def batch_venv(tmp_path_factory) -> Path:
    return replay_builder("batch", tmp_path_factory.mktemp("batch-image"))


def _installed(venv: Path) -> set[str]:
    out = subprocess.run([shutil.which("uv"), "pip", "list", "--format", "json", "--python",
                          str(venv / "bin" / "python")], capture_output=True, text=True,
                         env=_clean_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    return {p["name"].lower() for p in json.loads(out.stdout)}


def test_api_install_has_no_batch_libraries(api_venv):
    installed = _installed(api_venv)
    assert {"flask", "gunicorn", "redis", "recsys"} <= installed
    assert not installed & HEAVY, f"batch libraries in the API image: {sorted(installed & HEAVY)}"
    probe = ("import importlib.util as u, lookup_api, sys; "
             "sys.exit(any(u.find_spec(m) for m in ('implicit', 'surprise', 'sklearn', 'pandas')))")
    out = subprocess.run([api_venv / "bin" / "python", "-c", probe], capture_output=True, text=True,
                         env=_clean_env(), cwd="/tmp", timeout=60)
    assert out.returncode == 0, out.stderr
    # installed as a wheel (--no-editable): the code comes from site-packages, not the checkout
    code = "import lookup_api; print(lookup_api.__file__)"
    where = subprocess.run([api_venv / "bin" / "python", "-c", code], capture_output=True, text=True,
                           env=_clean_env(), cwd="/tmp", timeout=60)
    assert "site-packages" in where.stdout, where.stdout + where.stderr


# Extension modules only imported when their own dependencies are present:
# implicit's CUDA backend needs `rmm` (not installed) and CUDA; without them implicit.gpu
# catches the ImportError and the CPU models are used.
OPTIONAL_EXTENSIONS = {"implicit/gpu/_cuda.so"}


def _is_elf(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"\x7fELF"


def needed_libraries(venv: Path) -> dict[str, set[str]]:
    """Shared library name -> the virtualenv's ELF files that link it but do not bundle it."""
    readelf = shutil.which("readelf")
    if not readelf:
        pytest.skip("readelf (binutils) not installed")
    elves = [p for p in venv.rglob("*") if p.is_file() and not p.is_symlink()
             and (".so" in p.name or p.parent.name == "bin") and _is_elf(p)
             and p.relative_to(venv).as_posix().split("site-packages/")[-1] not in OPTIONAL_EXTENSIONS]
    bundled = {p.name for p in venv.rglob("*.so*")}
    out = subprocess.run([readelf, "-d", "-W", *map(str, elves)], capture_output=True, text=True,
                         timeout=120)
    needs: dict[str, set[str]] = {}
    current = ""
    for line in out.stdout.splitlines():
        if line.startswith("File: "):
            current = line[6:]
            continue
        m = re.search(r"\(NEEDED\)\s+Shared library: \[(.+)\]", line)
        if m and m.group(1) not in bundled and not m.group(1).startswith("libpython"):
            needs.setdefault(m.group(1), set()).add(Path(current).name)
    return needs


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_every_linked_library_is_bundled_in_the_base_or_installed(kind, request):
    venv = request.getfixturevalue(f"{kind}_venv")
    _, runtime = builder_and_runtime(kind)
    packages = apt_installs(runtime)
    provided = BASE_IMAGE_LIBS.union(*(RUNTIME_PACKAGE_LIBS[p] for p in packages))
    needs = needed_libraries(venv)
    missing = {lib: sorted(users)[:3] for lib, users in needs.items() if lib not in provided}
    assert not missing, f"Dockerfile.{kind} runtime lacks {missing}"
    for package in packages:  # and nothing installed that nothing needs
        assert RUNTIME_PACKAGE_LIBS[package] & needs.keys(), f"{package} is not needed"


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _image_env(kind: str, venv: Path, **extra: str) -> dict[str, str]:
    """The runtime stage's ENV, with PATH leading to the replayed virtualenv, plus ``extra``."""
    _, runtime = builder_and_runtime(kind)
    env = _clean_env(**{**{k: v for k, v in runtime.env().items() if k != "PATH" and v}, **extra})
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    return env


def _wait_for(url: str, want: int, proc: subprocess.Popen, seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, f"gunicorn exited: {proc.stdout.read()}"
        try:
            status, body = _get(url)
            if status == want:
                return body
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, f"{url} did not return {want} within {seconds} s"
        time.sleep(0.2)


def test_batch_image_publishes_and_api_image_serves(api_venv, batch_venv, redis_url, prefix, small_dir,
                                                    tmp_path):
    """CronJob command in the batch venv, image CMD in the API venv, one Redis: the deployed flow."""
    _, api_rt = builder_and_runtime("api")
    port = free_port()
    api_env = _image_env("api", api_venv, REDIS_URL=redis_url, RECSYS_PREFIX=prefix, PORT=str(port),
                         WEB_CONCURRENCY="1")
    proc = subprocess.Popen(api_rt.exec_form("CMD"), env=api_env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}/healthz", 200, proc)
        body = _wait_for(f"{base}/readyz", 503, proc)  # Redis up, nothing published yet
        assert body.get("status") == "not ready", body
        health = json.loads(api_rt.all("HEALTHCHECK")[0].value.removeprefix("CMD").strip())
        check = subprocess.run(health, env=api_env, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr

        batch = app_container(render_without_kubectl(), "CronJob", IMAGES["batch"])
        batch_env = _image_env("batch", batch_venv, REDIS_URL=redis_url, RECSYS_PREFIX=prefix,
                               RECSYS_DATA_DIR=str(small_dir))
        run = subprocess.run(batch["command"] + batch["args"], env=batch_env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "published" in run.stdout

        _wait_for(f"{base}/readyz", 200, proc, seconds=10)
        status, doc = _get(f"{base}/recommendations/1?n=5")
        assert status == 200 and doc["source"] == "personalized" and len(doc["items"]) == 5, doc
    finally:
        proc.send_signal(signal.SIGTERM)  # what `docker stop` and Kubernetes send to PID 1
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    log = proc.stdout.read()
    assert code == 0, log
    assert "Handling signal: term" in log, log
