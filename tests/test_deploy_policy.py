"""Policy for the manifests under cronjobs/: limits, probes, security, references, consistency.

Tests over every workload run on both installs (the default one and the one with the optional
sharded component); the others check the default install's objects.
"""

from __future__ import annotations

import re

from tests.deploy_helpers import (
    BATCH_PEAK_RSS,
    IMAGES,
    ROOT,
    app_container,
    base_name,
    builder_and_runtime,
    containers,
    find,
    kustomization,
    pod_labels,
    pod_spec,
    quantity,
    raw_manifests,
    workloads,
)


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


def test_services_select_pods_and_named_ports(install):
    for svc in (o for o in install if o["kind"] == "Service"):
        selector = svc["spec"]["selector"].items()
        targets = [w for w in workloads(install)
                   if selector <= pod_labels(w).items()]
        assert len(targets) == 1, f"Service {svc['metadata']['name']} selects {len(targets)} workloads"
        names = {p.get("name") for c in containers(targets[0]) for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names
    sts = find(install, "StatefulSet", "recsys-redis")
    headless = find(install, "Service", sts["spec"]["serviceName"])
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


def test_every_pod_runs_restricted(install):
    """Pod Security 'restricted' plus a read-only root: writable paths are volumes."""
    for w in workloads(install):
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
    ns = find(install, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_container_has_requests_and_limits(install):
    for w in workloads(install):
        for c in containers(w):
            res = c["resources"]
            for key in ("cpu", "memory"):
                assert quantity(res["requests"][key]) <= quantity(res["limits"][key]), (c["name"], key)


def test_referenced_secrets_configmaps_and_claims_exist(install):
    """By exact name: kustomize must have rewritten references to generated (hashed) names."""
    have = {(o["kind"], o["metadata"]["name"]): o for o in install}

    def check(kind: str, name: str, key: str | None = None) -> None:
        obj = have.get((kind, name))
        assert obj is not None, f"{kind} {name} is referenced but not part of the install"
        if key:
            assert key in {**obj.get("data", {}), **obj.get("stringData", {})}, f"{kind} {name} lacks {key}"

    for w in workloads(install):
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
    _, api_rt = builder_and_runtime("api")
    assert api["command"] == api_rt.exec_form("CMD") == ["recsys-api"] and "args" not in api
    env = {e["name"] for e in api["env"]}
    read = "".join((ROOT / "lookup_api" / f).read_text() for f in ("gunicorn_conf.py", "server.py"))
    for knob in ("WEB_CONCURRENCY", "GUNICORN_TIMEOUT", "GUNICORN_THREADS", "RECSYS_HEADER_TIMEOUT"):
        assert knob in env and f'"{knob}"' in read, f"{knob}: set by the manifest, read by recsys-api"
    for kind, runtime in (("CronJob", batch_rt), ("Deployment", api_rt)):
        uid = pod_spec(find(rendered, kind))["securityContext"]["runAsUser"]
        assert runtime.all("USER")[-1].value.split(":")[0] == str(uid), "manifest and image disagree on uid"
