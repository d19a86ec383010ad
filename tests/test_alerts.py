"""Alert rules (cronjobs/monitoring/): promtool check + unit tests, one source of truth, docs, manifests.

``uv run python -m tests.test_alerts`` regenerates prometheus-rule.yaml from rules.yml.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.prom_helpers import need

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "cronjobs" / "monitoring"
RULES, RULE_TESTS, OPERATOR_RULE = (MONITORING / n for n in ("rules.yml", "rules.test.yml",
                                                             "prometheus-rule.yaml"))
DASHBOARD = MONITORING / "grafana-dashboard.json"
DOC = ROOT / "docs" / "observability.md"
CRDS = {"PrometheusRule", "PodMonitor"}  # prometheus-operator kinds: not in the Kubernetes schemas


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def render_operator_rule() -> str:
    """Return prometheus-rule.yaml as generated from rules.yml."""
    doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": "recsys", "labels": {"app.kubernetes.io/part-of": "recsys"}},
           "spec": yaml.safe_load(RULES.read_text())}
    return ("# GENERATED from rules.yml (the one source of truth); regenerate with\n"
            "#   uv run python -m tests.test_alerts\n"
            "# Some Prometheus installs select rules by label (e.g. release: <name>): add it here.\n"
            + yaml.safe_dump(doc, sort_keys=False, width=1000))


def test_promtool_checks_the_rules():
    out = subprocess.run([need("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout


def test_promtool_unit_tests_pass():
    out = subprocess.run([need("promtool"), "test", "rules", RULE_TESTS.name], cwd=MONITORING,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_unit_tested_firing_and_silent():
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    for alert in alerts():
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{alert['alert']}: no test where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert['alert']}: no test where it stays silent"


def test_the_issue_alerts_exist():
    names = {a["alert"] for a in alerts()}
    assert {"RecsysBatchNoRecentSuccess", "RecsysBatchFailed", "RecsysLiveRunTooOld",
            "RecsysFallbackRatioHigh", "RecsysApi5xx", "RecsysApiP99High"} <= names


def test_prometheus_rule_is_generated_from_the_rules_file():
    assert OPERATOR_RULE.read_text() == render_operator_rule(), (
        "prometheus-rule.yaml differs from rules.yml: run `uv run python -m tests.test_alerts`")


def test_every_alert_has_a_runbook_section():
    doc = DOC.read_text()
    for alert in alerts():
        anchor = alert["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == alert["alert"].lower()
        assert f"### {alert['alert']}" in doc, f"docs/observability.md lacks a section for {alert['alert']}"


def test_dashboard_queries_only_documented_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    doc = DOC.read_text()
    for expr in exprs:
        for name in re.findall(r"\brecsys_[a-z_]+", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert f"`{base}" in doc, f"dashboard uses {name}, not documented in docs/observability.md"


def test_api_pods_carry_scrape_annotations():
    deployment = yaml.safe_load((ROOT / "cronjobs" / "api-deployment.yaml").read_text())
    template = deployment["spec"]["template"]
    notes = template["metadata"]["annotations"]
    (port,) = [p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]]
    assert notes == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                     "prometheus.io/path": "/metrics"}


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed (kustomize rendering)")
def test_monitoring_component_renders_and_validates():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    from tests.deploy_helpers import K8S_VERSIONS, base_name, run_kubectl_kustomize

    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "cronjobs"
        shutil.copytree(ROOT / "cronjobs", tree)
        kust = tree / "kustomization.yaml"
        kust.write_text(kust.read_text() + "\ncomponents:\n  - monitoring\n")  # as docs/observability.md says
        objects = run_kubectl_kustomize(tree)
    kinds = {o["kind"]: o for o in objects}
    assert kinds["PrometheusRule"]["spec"] == yaml.safe_load(RULES.read_text())
    assert kinds["PrometheusRule"]["metadata"]["namespace"] == "recsys"
    assert kinds["PodMonitor"]["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "recsys-api"}
    config = next(o for o in objects if o["kind"] == "ConfigMap" and base_name(o["metadata"]["name"])
                  == "recsys-config")
    assert config["data"]["RECSYS_PUSHGATEWAY"].startswith("http://")
    assert config["data"]["RECSYS_PREFIX"] == "recsys"  # merged into, not replaced
    for obj in objects:
        if obj["kind"] not in CRDS:  # CRDs: no schema in kubernetes-validate; checked above instead
            kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)


if __name__ == "__main__":
    OPERATOR_RULE.write_text(render_operator_rule())
    print(f"wrote {OPERATOR_RULE.relative_to(ROOT)}")
