"""The optional sharded run (cronjobs/sharded/, a kustomize component), checked without a cluster.

Three suspended CronJobs serve as Job templates: `train` (writes the artifacts to an RWX
volume), an Indexed Job running `score --shard index/N`, then `publish --shards N`.  Schemas
and generic policy (restricted pods, references, real CLI parse) run on this install in
test_deploy.py, test_deploy_policy.py and test_deploy_commands.py; here: composition,
sharding invariants, conventions shared with the nightly CronJob and the docs.  The three steps
replayed with the manifests' exact arguments: test_deploy_sharded_replay.py.
"""

from __future__ import annotations

import copy
import re
import shutil

import pytest
import yaml

from tests.deploy_helpers import (
    CRONJOBS,
    IMAGES,
    K8S_VERSIONS,
    ROOT,
    SHARDED,
    SHARDED_PEAK_RSS,
    base_name,
    builder_and_runtime,
    containers,
    enable_component,
    find,
    job_spec,
    kubectl_kustomize_with_component,
    kustomization,
    pod_labels,
    pod_spec,
    quantity,
    raw_manifests,
    render_without_kubectl,
    rendered_install,
)

STEPS = {step: f"recsys-sharded-{step}" for step in ("train", "score", "publish")}  # in run order
NIGHTLY = "recsys-batch"
DOC = ROOT / "docs" / "deploy.md"


@pytest.fixture(scope="module")
def sharded() -> list[dict]:
    return rendered_install("sharded")


def container(objects: list[dict], name: str) -> dict:
    (c,) = pod_spec(find(objects, "CronJob", name))["containers"]
    return c


def argv(objects: list[dict], name: str) -> list[str]:
    c = container(objects, name)
    return c["command"] + c["args"]


def option(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def mounts(objects: list[dict], name: str) -> dict[str, tuple[dict, dict]]:
    """mountPath -> (volumeMount, volume) for a step's container."""
    volumes = {v["name"]: v for v in pod_spec(find(objects, "CronJob", name))["volumes"]}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in container(objects, name)["volumeMounts"]}


# ================================================================================ composition
def test_component_lists_every_file_and_is_off_by_default():
    comp = kustomization(CRONJOBS / SHARDED)
    assert comp["kind"] == "Component" and comp["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    listed = set(comp["resources"]) | {p["path"] for p in comp.get("patches", [])}
    on_disk = {p.name for p in (CRONJOBS / SHARDED).glob("*.y*ml")} - {"kustomization.yaml"}
    assert on_disk == listed
    text = (CRONJOBS / "kustomization.yaml").read_text()
    assert "components" not in kustomization(), "off by default: `kubectl apply -k cronjobs/` unchanged"
    assert yaml.safe_load(enable_component(text))["components"] == [SHARDED], "the documented switch"


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed (fallback checked instead)")
def test_kubectl_kustomize_of_the_enabled_component_matches_the_fallback():
    def summary(objects, strip):
        return {(o["kind"], strip(o["metadata"]["name"]), o["metadata"].get("namespace"),
                 (o["spec"].get("suspend"), tuple(c["image"] for c in pod_spec(o)["containers"]))
                 if o["kind"] == "CronJob" else None) for o in objects}

    assert summary(kubectl_kustomize_with_component(), base_name) == \
        summary(render_without_kubectl((SHARDED,)), str)


def test_sharded_install_is_the_default_one_plus_the_sharded_objects(sharded):
    default = {(o["kind"], o["metadata"]["name"]): o for o in rendered_install("default")}
    added = {(o["kind"], o["metadata"]["name"]): o for o in sharded}
    for key, obj in default.items():
        expected = copy.deepcopy(obj)
        if key == ("CronJob", NIGHTLY):
            expected["spec"]["suspend"] = True  # the one change: the sharded run replaces it
        assert added.pop(key) == expected, key
    assert {(k, base_name(n)) for k, n in added} == {("CronJob", n) for n in STEPS.values()} | {
        ("PersistentVolumeClaim", "recsys-artifacts"), ("PersistentVolumeClaim", "recsys-sharded-data")}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_jobs_created_from_the_templates_validate(sharded, version):
    """What `kubectl create job --from=cronjob/...` submits: the template's spec as a Job."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for step, name in STEPS.items():
        cron = find(sharded, "CronJob", name)
        job_name = f"recsys-{step}-20261126-020000"  # as in docs/deploy.md
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": job_name, "namespace": cron["metadata"]["namespace"],
                            "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                            "labels": cron["spec"]["jobTemplate"]["metadata"]["labels"]},
               "spec": cron["spec"]["jobTemplate"]["spec"]}
        kubernetes_validate.validate(job, version, strict=True)
        assert len(f"{job_name}-{job['spec'].get('completions', 1) - 1}") <= 63, "pod hostname too long"


# ============================================================================ sharding policy
def test_steps_are_suspended_templates_with_bounded_retries_and_deadlines(sharded):
    for step, name in STEPS.items():
        cron = find(sharded, "CronJob", name)["spec"]
        assert cron["suspend"] is True, f"{name} is a template; the steps must run in order"
        assert cron["concurrencyPolicy"] == "Forbid"
        job = cron["jobTemplate"]["spec"]
        assert 60 <= job["activeDeadlineSeconds"] <= 4 * 3600 and job["ttlSecondsAfterFinished"] > 0
        assert job["template"]["spec"]["restartPolicy"] == "Never"
        (fail_fast,) = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
        assert fail_fast["onExitCodes"]["values"] == [2], "usage errors (exit 2) must not be retried"
        assert fail_fast["onExitCodes"]["containerName"] == container(sharded, name)["name"]
        if step == "score":  # per-index retries; one index failed for good fails the job
            assert 0 < job["backoffLimitPerIndex"] <= 5 and job["maxFailedIndexes"] == 0
            assert "backoffLimit" not in job
        else:
            assert 0 < job["backoffLimit"] <= 5


def test_score_is_an_indexed_job_over_the_shard_count_publish_waits_for(sharded):
    job = job_spec(find(sharded, "CronJob", STEPS["score"]))
    assert job["completionMode"] == "Indexed"
    n = job["completions"]
    assert n >= 2 and job["parallelism"] == n, "every shard runs at once"
    # the shard index comes from JOB_COMPLETION_INDEX, which Kubernetes sets in each pod
    assert option(argv(sharded, STEPS["score"]), "--shard") == f"index/{n}"
    assert option(argv(sharded, STEPS["publish"]), "--shards") == str(n)


def test_train_lease_outlasts_the_three_steps(sharded):
    deadlines = sum(job_spec(find(sharded, "CronJob", n))["activeDeadlineSeconds"] for n in STEPS.values())
    assert float(option(argv(sharded, STEPS["train"]), "--lock-ttl")) >= deadlines


def test_every_step_uses_the_same_artifacts_on_one_rwx_volume(sharded):
    paths = {step: option(argv(sharded, name), "--artifacts") for step, name in STEPS.items()}
    assert len(set(paths.values())) == 1, paths
    claims = set()
    for step, name in STEPS.items():
        (mount_path,) = [p for p in mounts(sharded, name) if paths[step].startswith(p.rstrip("/") + "/")]
        mount, volume = mounts(sharded, name)[mount_path]
        claims.add(volume["persistentVolumeClaim"]["claimName"])
        assert mount.get("readOnly", False) is (step != "train"), "only train writes the artifacts"
    (claim,) = claims
    assert find(sharded, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]


def test_train_reads_a_real_dataset_from_its_own_volume(sharded):
    from batch.download import RELEASES

    env = {e["name"]: e.get("value") for e in container(sharded, STEPS["train"])["env"]}
    assert env["RECSYS_DATASET"] in RELEASES
    _, volume = mounts(sharded, STEPS["train"])[env["RECSYS_DATA_DIR"]]
    claim = find(sharded, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    nightly_claim = pod_spec(find(sharded, "CronJob", NIGHTLY))["volumes"][0]["persistentVolumeClaim"]
    assert claim["metadata"]["name"] != nightly_claim["claimName"], "its own dataset cache"
    for name in (STEPS["score"], STEPS["publish"]):
        assert env["RECSYS_DATA_DIR"] not in mounts(sharded, name), "only train reads the dataset"


def test_steps_follow_the_nightly_conventions(sharded):
    nightly = find(sharded, "CronJob", NIGHTLY)
    ref = container(sharded, NIGHTLY)
    _, runtime = builder_and_runtime("batch")
    netpol = find(sharded, "NetworkPolicy", "recsys-redis")["spec"]["ingress"][0]["from"]
    redis_clients = [p["podSelector"]["matchLabels"] for p in netpol]
    for name in STEPS.values():
        cron, c = find(sharded, "CronJob", name), container(sharded, name)
        assert c["image"] == ref["image"] and c["imagePullPolicy"] == ref["imagePullPolicy"]
        assert c["command"] == ref["command"] == runtime.exec_form("ENTRYPOINT")
        assert pod_spec(cron)["securityContext"] == pod_spec(nightly)["securityContext"]
        assert c["securityContext"] == ref["securityContext"]
        assert pod_spec(cron)["automountServiceAccountToken"] is False
        env = {e["name"]: e for e in c["env"]}
        assert env["REDIS_URL"] == {e["name"]: e for e in ref["env"]}["REDIS_URL"]
        assert env["OPENBLAS_NUM_THREADS"]["value"] == "1" and c["envFrom"] == ref["envFrom"]
        assert any(sel.items() <= pod_labels(cron).items() for sel in redis_clients), "Redis would refuse it"
        assert mounts(sharded, name)["/tmp"][1] == mounts(sharded, NIGHTLY)["/tmp"][1]
    raw = {c["image"] for _, o in raw_manifests(CRONJOBS / SHARDED) for c in containers(o)}
    assert raw == {IMAGES["batch"]}, "the image is set once, by `images:` in cronjobs/kustomization.yaml"


def test_step_resources_are_sized_from_measured_peak_memory(sharded):
    env = {e["name"]: e.get("value") for e in container(sharded, STEPS["train"])["env"]}
    assert env["RECSYS_DATASET"] in SHARDED_PEAK_RSS, "measure the steps on this dataset first (docs)"
    peaks = SHARDED_PEAK_RSS[env["RECSYS_DATASET"]]
    for step, name in STEPS.items():
        res = container(sharded, name)["resources"]
        assert quantity(res["requests"]["memory"]) >= 1.5 * peaks[step], step
        assert quantity(res["requests"]["cpu"]) >= (1 if step != "publish" else 0.25), step
        assert "ephemeral-storage" in res["requests"] and "ephemeral-storage" in res["limits"]


# ================================================================================== the docs
def test_docs_give_the_ordered_commands_with_long_enough_waits(sharded):
    doc = DOC.read_text()
    section = doc[doc.index("## Sharded run (larger datasets)"):]
    section = section[:section.find("\n## ", 3)]
    assert "# components:" in (CRONJOBS / "kustomization.yaml").read_text() and "components:" in section
    for needle in ("ReadWriteMany", "kubectl apply -k cronjobs/", "Validated here", "Needs a cluster"):
        assert needle in section, needle
    created = re.findall(r"create job --from=cronjob/([\w-]+) \"?([\w$-]+)", section)
    assert [c for c, _ in created] == list(STEPS.values()), "train, score, publish, in this order"
    for cron, job in created:
        (timeout,) = re.findall(rf"wait --for=condition=complete --timeout=(\d+)m \"?job/{re.escape(job)}\b",
                                section)
        assert int(timeout) * 60 >= job_spec(find(sharded, "CronJob", cron))["activeDeadlineSeconds"], cron
