"""The rendered manifests as podman 4.3 runs them (tests/test_images.py; docs/deploy.md).

``podman kube play`` runs Pods and Deployments but not CronJobs; it reads a ConfigMap only
through ``--configmap`` and a Secret only as JSON of its data; it publishes every
``containerPort`` on the host.  These adapters change nothing else: command, args, env,
securityContext, volumes and resources are the manifests' own.
"""

from __future__ import annotations

import base64
import copy
import json

from tests.deploy_helpers import quantity


def emptydir_tmpfs(pod: dict, container: dict) -> list[str]:
    """``--tmpfs`` flags for the container's emptyDir mounts (size from ``sizeLimit``)."""
    empty = {v["name"]: v["emptyDir"] or {} for v in pod.get("volumes", []) if "emptyDir" in v}
    flags = []
    for mount in container.get("volumeMounts", []):
        if mount["name"] in empty:
            size = empty[mount["name"]].get("sizeLimit")
            opts = "rw,nosuid,nodev,mode=1777" + (f",size={int(quantity(size))}" if size else "")
            flags += ["--tmpfs", f"{mount['mountPath']}:{opts}"]
    return flags


def cronjob_as_pod(cronjob: dict) -> dict:
    """The Pod a CronJob's Job would create (kube play runs Pods, not CronJobs or Jobs)."""
    template = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": cronjob["metadata"]["name"], "labels": template["metadata"]["labels"]},
            "spec": template["spec"]}


def secret_for_podman(secret: dict) -> str:
    """A Secret as podman 4.3's kube play reads it back: JSON of its base64 ``data``."""
    data = dict(secret.get("data", {}))
    for key, value in secret.get("stringData", {}).items():
        data[key] = base64.b64encode(value.encode()).decode()
    return json.dumps(data)


def deployment_for_podman(deployment: dict, host_port: int) -> dict:
    """The Deployment as podman 4.3 can run it: one replica, its port on loopback.

    podman before 4.7 publishes every ``containerPort`` on the host's same port (containers/podman
    #17028), so two replicas collide on :8000 and one takes the host's :8000 on every interface.
    Only these two fields change; a cluster needs neither.
    """
    out = copy.deepcopy(deployment)
    out["spec"]["replicas"] = 1
    for container in out["spec"]["template"]["spec"]["containers"]:
        for port in container.get("ports", []):
            port.update(hostIP="127.0.0.1", hostPort=host_port)
    return out
