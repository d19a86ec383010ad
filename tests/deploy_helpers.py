"""Helpers for the deployment tests (tests/test_deploy*.py, tests/test_api_install.py).

Dockerfile parsing; the kustomize tree under cronjobs/ rendered by ``kubectl kustomize`` where
kubectl exists, else by a structural fallback; accessors for workloads, pods and containers;
the real CLI parse of a ``recsys-batch`` command line; and :func:`recsys_api`, the API's one
command (``recsys-api``) on a free loopback port.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CRONJOBS = ROOT / "cronjobs"
SHARDED = "sharded"  # the optional component, cronjobs/sharded/
DOCKERFILES = {"batch": ROOT / "Dockerfile.batch", "api": ROOT / "Dockerfile.api"}
IMAGES = {"batch": "recsys-batch", "api": "recsys-api"}
K8S_VERSIONS = ["1.31.0", "1.37.0"]  # oldest with every field used here (podFailurePolicy GA) .. newest
BATCH_PEAK_RSS = 510 * 2**20  # `run`, measured on real ML-1M
# The sharded steps' peak RSS per pod, by dataset (/usr/bin/time, KiB; score with 4 shards).
# Only measured datasets may be deployed (test_deploy_sharded.py): add one before switching.
SHARDED_PEAK_RSS = {
    "ml-1m": {"train": 346_828 * 2**10, "score": 346_000 * 2**10, "publish": 182_364 * 2**10},
}
RECSYS_API = Path(sys.executable).parent / "recsys-api"  # the console script, as users run it
HEAVY = {"implicit", "scikit-surprise", "scikit-learn", "pandas", "numpy", "scipy", "matplotlib"}
BIN = Path(sys.executable).parent
# Shared libraries every python:3.11.x-slim-bookworm image has (glibc, libgcc-s1, and the
# libstdc++6 + zlib1g that apt/dpkg themselves need) ...
BASE_IMAGE_LIBS = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1",
                   "ld-linux-x86-64.so.2", "libgcc_s.so.1", "libstdc++.so.6", "libz.so.1"}
# ... and what the Debian packages a runtime stage may add provide.
RUNTIME_PACKAGE_LIBS = {"libgomp1": {"libgomp.so.1"}}
INSTALLS = ("default", "sharded")  # `kubectl apply -k cronjobs/` without / with the component


# --------------------------------------------------------------------------- Dockerfile parsing
@dataclass
class Instruction:
    keyword: str
    flags: dict[str, str]
    value: str


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """The stage's ENV, with ``${NAME}`` of its ARG defaults and earlier ENV substituted."""
        known: dict[str, str] = {}
        out: dict[str, str] = {}
        for ins in self.instructions:
            if ins.keyword == "ARG":
                name, _, default = ins.value.partition("=")
                known[name] = default.strip('"')
            elif ins.keyword == "ENV":
                for token in shlex.split(ins.value):
                    key, _, value = token.partition("=")
                    value = re.sub(r"\$\{(\w+)\}", lambda m: known.get(m.group(1), m.group(0)), value)
                    out[key] = known[key] = value
        return out

    def exec_form(self, keyword: str) -> list[str]:
        (ins,) = self.all(keyword)
        return yaml.safe_load(ins.value)  # JSON arrays are YAML


def _logical_lines(text: str) -> list[str]:
    """Join continuation lines; drop comments (also inside continuations) and blank lines."""
    lines, buf = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        lines.append(buf + stripped)
        buf = ""
    assert not buf, "dangling line continuation"
    return lines


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Return (global ARG defaults, stages) with ``${ARG}`` substituted in FROM lines."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        flags = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name], rest = value, rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default.strip('"')
        elif keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
            parts = rest.split()
            stages.append(Stage(image, parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None))
        else:
            stages[-1].instructions.append(Instruction(keyword, flags, rest))
    return args, stages


def builder_and_runtime(kind: str) -> tuple[Stage, Stage]:
    _, stages = parse_dockerfile(DOCKERFILES[kind])
    return next(s for s in stages if s.name == "builder"), stages[-1]


def uv_sync_commands(stage: Stage) -> list[list[str]]:
    """The ``uv sync`` command lines a stage RUNs (RUN flags like --mount stripped)."""
    return [shlex.split(i.value) for i in stage.all("RUN") if i.value.startswith("uv sync")]


def apt_installs(stage: Stage) -> list[str]:
    """Debian packages a stage installs with ``apt-get install``."""
    out = []
    for ins in stage.all("RUN"):
        for cmd in re.findall(r"apt-get install ([^&;|]+)", ins.value):
            out.extend(t for t in cmd.split() if not t.startswith("-"))
    return out


def copy_sources(stage: Stage) -> list[str]:
    """Paths a stage COPYs from the build context (not ``--from`` another stage)."""
    out = []
    for ins in stage.all("COPY"):
        if "from" not in ins.flags:
            out.extend(shlex.split(ins.value)[:-1])
    return out


# ------------------------------------------------------------------------------ manifests
def kustomization(directory: Path = CRONJOBS) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def raw_manifests(directory: Path = CRONJOBS) -> list[tuple[str, dict]]:
    """(file name, object) for every document of every resource file, as written."""
    out = []
    for name in kustomization(directory)["resources"]:
        for doc in yaml.safe_load_all((directory / name).read_text()):
            if doc:
                out.append((name, doc))
    return out


def enable_component(text: str, name: str = SHARDED) -> str:
    """cronjobs/kustomization.yaml with its commented-out ``components: [name]`` switched on."""
    commented = f"# components:\n#   - {name}\n"
    assert text.count(commented) == 1, f"kustomization.yaml lacks the commented-out component {name}"
    return text.replace(commented, f"components:\n  - {name}\n")


def _merge(into: dict, patch: dict) -> None:
    """A strategic merge patch of maps (all the component's patches need)."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def render_without_kubectl(components: tuple[str, ...] = ()) -> list[dict]:
    """What ``kubectl kustomize cronjobs/`` produces, minus generator name hashes (fallback)."""
    kust = kustomization()
    ns, images = kust.get("namespace"), {i["name"]: i for i in kust.get("images", [])}
    objects = [dict(obj) for _, obj in raw_manifests()]
    for comp in components:
        objects += [obj for _, obj in raw_manifests(CRONJOBS / comp)]
        for patch in kustomization(CRONJOBS / comp).get("patches", []):
            target = yaml.safe_load((CRONJOBS / comp / patch["path"]).read_text())
            _merge(find(objects, target["kind"], target["metadata"]["name"]), target)
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for gen in kust.get(key, []):
            data = dict(line.split("=", 1) for line in gen.get("literals", []))
            objects.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": gen["name"]},
                            "data" if kind == "ConfigMap" else "stringData": data})
    for obj in objects:
        if ns and obj["kind"] != "Namespace":
            obj["metadata"] = {**obj["metadata"], "namespace": ns}
        for container in containers(obj):
            new = images.get(container["image"])
            if new:
                container["image"] = f"{new.get('newName', container['image'])}:{new['newTag']}"
    return objects


def run_kubectl_kustomize(directory: Path = CRONJOBS) -> list[dict]:
    out = subprocess.run([shutil.which("kubectl"), "kustomize", str(directory)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def kubectl_kustomize_with_component(name: str = SHARDED) -> list[dict]:
    """``kubectl kustomize`` of a copy of cronjobs/ with the component enabled as documented."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "cronjobs"
        shutil.copytree(CRONJOBS, tree)
        kust = tree / "kustomization.yaml"
        kust.write_text(enable_component(kust.read_text(), name))
        return run_kubectl_kustomize(tree)


@functools.cache
def _render(install: str, use_kubectl: bool) -> list[dict]:
    components = () if install == "default" else (SHARDED,)
    if not use_kubectl:
        return render_without_kubectl(components)
    return kubectl_kustomize_with_component() if components else run_kubectl_kustomize()


def rendered_install(install: str = "default") -> list[dict]:
    """An install as applied: kubectl's rendering where kubectl exists, else the fallback."""
    return copy.deepcopy(_render(install, bool(shutil.which("kubectl"))))


def base_name(name: str) -> str:
    """Strip kustomize's generator hash suffix (``recsys-config-bcmkk68gtb`` -> ``recsys-config``)."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def job_spec(obj: dict) -> dict | None:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]
    return obj["spec"] if obj["kind"] == "Job" else None


def pod_spec(obj: dict) -> dict | None:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        return spec["template"]["spec"]
    return None


def pod_labels(obj: dict) -> dict:
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    return spec["template"]["metadata"]["labels"]


def containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    return [] if spec is None else spec.get("initContainers", []) + spec["containers"]


def workloads(objects: list[dict]) -> list[dict]:
    return [o for o in objects if pod_spec(o) is not None]


def find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [o for o in objects if o["kind"] == kind
               and (name is None or base_name(o["metadata"]["name"]) == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def app_container(objects: list[dict], kind: str, image: str, name: str | None = None) -> dict:
    (c,) = [c for c in containers(find(objects, kind, name)) if c["image"].split("/")[-1].startswith(image)]
    return c


def quantity(value: str | int) -> float:
    """Kubernetes quantity -> float (bytes or cores)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert m, value
    return float(m.group(1)) * units.get(m.group(2), 1)


# ------------------------------------------------------------------------------------ CLI
def check_cli_argvs(argvs: list[list[str]]) -> None:
    """Each argv: its program is the installed console script (run once: it imports the whole
    CLI, seconds); the real CLI accepts ``argv --help``; and it parses argv's values for real."""
    from click.testing import CliRunner

    from batch.cli import cli

    for program in {argv[0] for argv in argvs}:
        exe = shutil.which(program, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        assert exe, f"{program} is not an installed console script"
        out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "Usage:" in out.stdout, out.stderr
    for argv in argvs:
        out = CliRunner().invoke(cli, [*argv[1:], "--help"], prog_name=argv[0])
        assert out.exit_code == 0 and "Usage:" in out.output, (argv, out.output)
        # --help stops before values are converted: parse them for real, without running anything
        at = next(i for i, token in enumerate(argv) if token in cli.commands)
        parent = cli.make_context(argv[0], list(argv[1:]))  # global options; the rest is left over
        cli.commands[argv[at]].make_context(argv[at], list(argv[at + 1:]), parent=parent).close()
        parent.close()


@dataclass
class Api:
    """A running ``recsys-api``: its process, base URL and (after it stopped) its stderr."""

    proc: subprocess.Popen
    url: str
    stderr: str = ""


@contextlib.contextmanager
def recsys_api(env: dict[str, str], *args: str, workers: int = 2, cwd: Path = ROOT,
               timeout: float = 60) -> Iterator[Api]:
    """Run ``recsys-api -w WORKERS -b 127.0.0.1:PORT [args]`` until /healthz answers; stop it afterwards."""
    from tests.conftest import free_port

    port = free_port()
    cmd = [str(RECSYS_API), "-w", str(workers), "-b", f"127.0.0.1:{port}", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    api = Api(proc, f"http://127.0.0.1:{port}")
    lines: list[str] = []  # read all along: a full pipe would block the server's logging, then its requests
    drain = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    drain.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(api.url + "/healthz", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    proc.wait(30)
                    drain.join(10)
                    raise RuntimeError(f"recsys-api did not start: {''.join(lines)[-2000:]}") from None
                time.sleep(0.1)
        yield api
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(30)
        drain.join(10)
        api.stderr = "".join(lines)
