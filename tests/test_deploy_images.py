"""The images and local runs: Dockerfiles (hadolint, structure), .dockerignore, docs/compose.yaml."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

from tests.deploy_helpers import (
    BIN,
    DOCKERFILES,
    HEAVY,
    IMAGES,
    ROOT,
    RUNTIME_PACKAGE_LIBS,
    app_container,
    apt_installs,
    builder_and_runtime,
    copy_sources,
    find,
    parse_dockerfile,
    uv_sync_commands,
)


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_hadolint_is_clean(kind):
    exe = shutil.which("hadolint", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not exe:
        pytest.skip("hadolint not installed (structural checks still run)")
    out = subprocess.run([exe, "--failure-threshold", "style", str(DOCKERFILES[kind])],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_is_multistage_pinned_frozen_and_non_root(kind):
    args, _ = parse_dockerfile(DOCKERFILES[kind])
    builder, runtime = builder_and_runtime(kind)
    python_base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-\w+)?", python_base), "pin an exact slim Python"
    assert builder.image == runtime.image == python_base, "the venv's interpreter must be the same"
    assert re.search(r":\d+\.\d+\.\d+$", args["UV_IMAGE"]), "pin uv"
    syncs = uv_sync_commands(builder)
    assert syncs and all({"--frozen", "--no-dev"} <= set(s) for s in syncs)
    extras = {s[s.index("--extra") + 1] for s in syncs}
    assert extras == {kind}, f"{kind} image installs extras {extras}"
    assert all(s.count("--extra") == 1 and "--all-extras" not in s for s in syncs)
    assert "--no-editable" in syncs[-1], "install the project as a wheel: no source tree at runtime"
    # final stage: only the venv from the builder, no toolchain, no uv, non-root
    final_text = " ".join(i.value for i in runtime.instructions)
    assert not re.search(r"\b(gcc|g\+\+|make|build-essential|[\w.+-]+-dev|uv sync|pip install)\b",
                         final_text), "no toolchain in the final stage (runtime libraries only)"
    assert set(apt_installs(runtime)) <= set(RUNTIME_PACKAGE_LIBS), "unexplained runtime package"
    assert [i.flags.get("from") for i in runtime.all("COPY")] == ["builder"]
    assert [shlex.split(i.value) for i in runtime.all("COPY")] == [["/opt/venv", "/opt/venv"]]
    user = runtime.all("USER")[-1].value
    assert re.fullmatch(r"[1-9]\d{3,}:[1-9]\d{3,}", user), "numeric non-root uid:gid (runAsNonRoot)"
    assert runtime.env()["PATH"].startswith("/opt/venv/bin:")
    # every file the build copies exists, and .dockerignore lets it through
    for src in copy_sources(builder):
        assert (ROOT / src).exists(), src
        assert not dockerignored(src), f".dockerignore excludes {src}, which the build needs"


def test_batch_image_specifics():
    builder, runtime = builder_and_runtime("batch")
    env = runtime.env()
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    assert "MPLCONFIGDIR" not in env, "matplotlib is in the eval extra, not in the image"
    # scikit-surprise makes this folder on import; its default, $HOME/.surprise_data, is under /data
    assert env["SURPRISE_DATA_FOLDER"].startswith("/tmp/"), "the data volume may be read-only"
    assert runtime.all("HEALTHCHECK")[0].value == "NONE"
    assert runtime.exec_form("ENTRYPOINT") == ["recsys-batch"] and runtime.exec_form("CMD") == ["run"]
    assert any("gcc" in i.value for i in builder.all("RUN")), "the builder can compile sdists"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "recsys-batch" in scripts


def test_api_image_specifics():
    builder, runtime = builder_and_runtime("api")
    assert not any("apt-get" in i.value for i in builder.instructions), "API builds from wheels only"
    (health,) = runtime.all("HEALTHCHECK")
    assert "/healthz" in health.value and "interval" in health.flags
    assert runtime.exec_form("CMD") == ["recsys-api"]  # the one API command (gunicorn + gunicorn_conf)
    env = runtime.env()
    # every knob the image sets is read by the config: give each a distinct value and read it back
    knobs = {"PORT": ("bind", "9123", ["0.0.0.0:9123"]), "WEB_CONCURRENCY": ("workers", "3", 3),
             "GUNICORN_THREADS": ("threads", "7", 7), "GUNICORN_TIMEOUT": ("timeout", "31", 31),
             "GUNICORN_GRACEFUL_TIMEOUT": ("graceful_timeout", "21", 21),
             "GUNICORN_KEEPALIVE": ("keepalive", "6", 6),
             "GUNICORN_CONTROL_SOCKET": ("control_socket", "/tmp/x.ctl", "/tmp/x.ctl")}
    assert set(knobs) <= set(env), set(knobs) - set(env)
    code = ("import json, lookup_api.gunicorn_conf as c; "
            f"print(json.dumps({{k: getattr(c, k) for k in {[v[0] for v in knobs.values()]!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **{k: v[1] for k, v in knobs.items()}})
    assert json.loads(out.stdout) == {v[0]: v[2] for v in knobs.values()}
    # gunicorn's control socket defaults under $HOME, and HOME=/nonexistent
    assert env["GUNICORN_CONTROL_SOCKET"].startswith("/tmp/")


def test_api_dependencies_are_all_wheels_for_the_image_python():
    """The API builder has no compiler: every locked API dependency needs a matching wheel."""
    args, _ = parse_dockerfile(DOCKERFILES["api"])
    minor = re.match(r"python:3\.(\d+)", args["PYTHON_IMAGE"]).group(1)
    out = subprocess.run(["uv", "export", "--frozen", "--no-dev", "--extra", "api", "--no-emit-project",
                          "--no-hashes", "--no-header", "--no-annotate"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pins = dict(re.match(r"([\w.-]+)==([^\s;]+)", line).groups()
                for line in out.stdout.splitlines() if "==" in line)
    assert not {n.lower() for n in pins} & HEAVY, "the API closure pulls in batch libraries"
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    wheels = {(p["name"], p["version"]): [w["url"].rsplit("/", 1)[1] for w in p.get("wheels", [])]
              for p in lock["package"]}
    for name, ver in pins.items():
        files = wheels[(name.lower().replace("_", "-"), ver)]
        platform = ("manylinux" in f and "x86_64" in f for f in files)
        ok = [f for f, linux in zip(files, platform, strict=True)
              if "none-any" in f or (linux and ("abi3" in f or f"cp3{minor}-cp3{minor}-" in f))]
        assert ok, f"{name}=={ver} has no wheel for python 3.{minor} manylinux x86_64"


# --------------------------------------------------------------------------- .dockerignore
def _ignore_patterns() -> list[str]:
    return [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def _matches(pattern: str, path: str) -> bool:
    regex = re.escape(pattern.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
    regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1))


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes; a parent match counts."""
    excluded = False
    for pattern in _ignore_patterns():
        negate = pattern.startswith("!")
        if _matches(pattern.lstrip("!"), path.rstrip("/")):
            excluded = not negate
    return excluded


@pytest.mark.parametrize("path", ["data/ml-1m/ratings.dat", "data/redis/recsys.rdb", ".git/HEAD",
                                  ".venv/bin/python", "batch/__pycache__/cli.cpython-311.pyc",
                                  ".pytest_cache/v/x", ".ruff_cache/x", "tests/test_deploy.py",
                                  "lookup_api/__pycache__/keys.pyc"])
def test_dockerignore_keeps_data_caches_and_git_out(path):
    assert dockerignored(path)


@pytest.mark.parametrize("path", ["pyproject.toml", "uv.lock", "README.md", "batch/cli.py",
                                  "lookup_api/keys.py", "batch/tuned_params.json"])
def test_dockerignore_lets_the_build_inputs_through(path):
    assert not dockerignored(path)


# -------------------------------------------------------------------------------- compose
def test_compose_file_matches_the_images_and_manifests(rendered):
    compose = yaml.safe_load((ROOT / "docs" / "compose.yaml").read_text())
    services = compose["services"]
    for kind, image in IMAGES.items():
        svc = services["api" if kind == "api" else "batch"]
        build = (ROOT / "docs" / svc["build"]["context"]).resolve()
        assert build == ROOT and (build / svc["build"]["dockerfile"]) == DOCKERFILES[kind]
        assert svc["image"].split(":")[0] == image
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        assert svc["environment"]["REDIS_URL"].startswith("redis://redis:")
    redis_c = find(rendered, "StatefulSet", "recsys-redis")["spec"]["template"]["spec"]["containers"][0]
    assert services["redis"]["command"] == redis_c["command"] + redis_c["args"]
    assert services["redis"]["image"] == redis_c["image"]
    batch = app_container(rendered, "CronJob", IMAGES["batch"])
    assert services["batch"]["command"] == batch["args"]
