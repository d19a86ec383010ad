"""Deployment artefacts, checked without a Docker engine or a cluster: kustomize and schemas.

The deployment tests are split by subject (helpers in tests/deploy_helpers.py):

* test_deploy.py: the kustomize tree under cronjobs/ composes (`kubectl kustomize` where kubectl
  exists, else a structural fallback) and every object validates against the Kubernetes schemas
  (kubernetes-validate, offline) -- the default install and the install with the optional
  sharded component;
* test_deploy_policy.py: probes, security contexts, resources, references, consistency with the
  Dockerfiles;
* test_deploy_commands.py: every command the manifests, Dockerfiles and docs run, run here
  (`--help` plus a real argument parse, gunicorn `--check-config`, redis-server);
* test_deploy_images.py: Dockerfiles (hadolint, structure), .dockerignore, docs/compose.yaml;
* test_deploy_sharded.py: the sharded run (cronjobs/sharded/); test_deploy_sharded_replay.py
  replays its three steps with the manifests' arguments against a real Redis.

The clean-virtualenv install of the images' dependencies is in test_api_install.py.
"""

from __future__ import annotations

import shutil

import pytest

from tests.deploy_helpers import (
    CRONJOBS,
    K8S_VERSIONS,
    base_name,
    find,
    kustomization,
    raw_manifests,
    render_without_kubectl,
    run_kubectl_kustomize,
)


def test_kustomization_lists_every_manifest_and_each_exists():
    kust = kustomization()
    listed = kust["resources"]
    for name in listed:
        assert (CRONJOBS / name).is_file(), f"kustomization.yaml lists missing {name}"
    on_disk = {p.name for p in CRONJOBS.glob("*.y*ml")} - {"kustomization.yaml"}
    assert on_disk == set(listed), f"manifests not applied by `kubectl apply -k`: {on_disk - set(listed)}"
    assert "components" not in kust, "optional components stay off in the default install"


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed (fallback checked instead)")
def test_kubectl_kustomize_composes_what_the_fallback_expects():
    by_kubectl = {(o["kind"], base_name(o["metadata"]["name"]), o["metadata"].get("namespace"))
                  for o in run_kubectl_kustomize()}
    by_fallback = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
                   for o in render_without_kubectl()}
    assert by_kubectl == by_fallback


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_install_validates_against_kubernetes_schemas(install, version):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for obj in install:
        kubernetes_validate.validate(obj, version, strict=True)  # raises with the failing path


@pytest.mark.parametrize("directory", [CRONJOBS, CRONJOBS / "sharded"], ids=["default", "sharded"])
def test_every_manifest_file_validates_as_written(directory):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for name, obj in raw_manifests(directory):
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
    assert not any(o["metadata"]["name"].startswith("recsys-sharded") for o in rendered)
    assert "suspend" not in find(rendered, "CronJob", "recsys-batch")["spec"], "the nightly run is live"
