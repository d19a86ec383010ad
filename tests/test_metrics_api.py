"""API metrics: /metrics in-process, and a real Prometheus scraping ``recsys-api`` with 2 workers."""

from __future__ import annotations

import importlib
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batch.store import RunStore
from lookup_api import create_app
from lookup_api.contract.keys import Keys
from tests.deploy_helpers import recsys_api
from tests.prom_helpers import get_json, prometheus

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

LOOKUP = "/recommendations/<user_id>"


def samples(text: str) -> dict[tuple, float]:
    """Parse Prometheus text into {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(http) -> dict[tuple, float]:
    resp = http.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    return samples(resp.get_data(as_text=True))


def requests(metrics: dict, route: str, status: str, source: str = "") -> float:
    key = ("recsys_api_requests_total", (("route", route), ("source", source), ("status", status)))
    return metrics.get(key, 0.0)


@pytest.fixture
def make_app(redis_url, prefix):
    def make(**config):
        return create_app({"REDIS_URL": redis_url, "PREFIX": prefix, "TESTING": True, **config})

    return make


def test_requests_are_counted_by_route_status_and_source(make_app, publish_small):
    run_id = publish_small()
    http = make_app().test_client()
    for uid in (1, 2, 3):
        assert http.get(f"/recommendations/{uid}").get_json()["source"] == "personalized"
    for uid in (900_001, 900_002):
        assert http.get(f"/recommendations/{uid}").get_json()["source"] == "popular"
    assert http.get("/recommendations/abc").status_code == 400
    assert http.get("/no/such/route").status_code == 404
    assert http.get("/popular?n=3").status_code == 200
    m = scrape(http)
    assert requests(m, LOOKUP, "200", "personalized") == 3
    assert requests(m, LOOKUP, "200", "popular") == 2
    assert requests(m, LOOKUP, "400") == 1
    assert requests(m, "<unmatched>", "404") == 1
    assert requests(m, "/popular", "200", "popular") == 1
    count = ("recsys_api_request_duration_seconds_count", (("route", LOOKUP),))
    inf = ("recsys_api_request_duration_seconds_bucket", (("le", "+Inf"), ("route", LOOKUP)))
    assert m[count] == 6 and m[inf] == 6
    assert m[("recsys_live_run_info", (("run_id", run_id),))] == 1
    assert 0 <= m[("recsys_live_run_age_seconds", ())] < 120
    assert ("recsys_live_run_max_age_seconds", ()) not in m  # RECSYS_MAX_RUN_AGE is off by default
    assert m[("recsys_api_redis_errors_total", (("kind", "connection"),))] == 0


def test_live_run_age_follows_the_runs_creation_time(make_app, publish_small, client, prefix):
    http = make_app().test_client()
    m = scrape(http)
    assert not any(name.startswith("recsys_live_run") for name, _ in m)  # nothing published yet
    run_id = publish_small()
    client.hset(Keys(prefix).meta(run_id), "created_ts", f"{time.time() - 5000:.3f}")
    m = scrape(http)
    assert 5000 <= m[("recsys_live_run_age_seconds", ())] < 5120


def test_stale_answers_and_redis_errors_are_counted(redis_process, small_dir, prefix, tmp_path):
    from batch.job import run_job
    from batch.params import Params
    from tests.conftest import SMALL_PARAMS

    run_job(small_dir, Params(**SMALL_PARAMS), RunStore(redis_process.client(), Keys(prefix)))
    http = create_app({"REDIS_URL": redis_process.url, "PREFIX": prefix, "RETRY_AFTER": 0.0,
                       "REDIS_SOCKET_TIMEOUT": 0.5, "REDIS_CONNECT_TIMEOUT": 0.5}).test_client()
    assert http.get("/recommendations/900001").get_json()["source"] == "popular"
    redis_process.stop()
    time.sleep(1.1)  # past POINTER_TTL: the next lookup asks Redis
    doc = http.get("/recommendations/900002").get_json()
    assert doc["stale"] is True
    m = scrape(http)
    assert requests(m, LOOKUP, "200", "stale") == 1
    assert requests(m, LOOKUP, "200", "popular") == 1
    assert m[("recsys_api_redis_errors_total", (("kind", "connection"),))] >= 1
    assert m[("recsys_api_redis_errors_total", (("kind", "timeout"),))] == 0
    assert not any(name == "recsys_live_run_info" for name, _ in m)  # Redis down: not known


def test_readyz_refuses_a_run_older_than_max_run_age(make_app, publish_small, client, prefix):
    run_id = publish_small()
    meta = Keys(prefix).meta(run_id)
    default, strict = make_app().test_client(), make_app(MAX_RUN_AGE=3600).test_client()
    assert strict.get("/readyz").status_code == 200
    assert scrape(strict)[("recsys_live_run_max_age_seconds", ())] == 3600
    client.hset(meta, "created_ts", f"{time.time() - 7200:.3f}")
    resp = strict.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["status"] == "not ready"
    assert run_id in resp.get_json()["reason"] and "RECSYS_MAX_RUN_AGE" in resp.get_json()["reason"]
    assert requests(scrape(strict), "/readyz", "503") == 1
    assert default.get("/readyz").status_code == 200  # off by default
    assert strict.get("/recommendations/1").status_code == 200  # lookups still served


def test_max_run_age_holds_with_metrics_switched_off(make_app, publish_small, client, prefix):
    run_id = publish_small()
    strict = make_app(MAX_RUN_AGE=3600, METRICS=False).test_client()
    assert strict.get("/readyz").status_code == 200
    client.hset(Keys(prefix).meta(run_id), "created_ts", f"{time.time() - 7200:.3f}")
    resp = strict.get("/readyz")
    assert resp.status_code == 503 and "RECSYS_MAX_RUN_AGE" in resp.get_json()["reason"]


def test_max_run_age_and_metrics_switch_come_from_the_environment(redis_url, prefix, monkeypatch):
    monkeypatch.setenv("RECSYS_MAX_RUN_AGE", "90000")
    app = create_app({"REDIS_URL": redis_url, "PREFIX": prefix})
    assert app.config["MAX_RUN_AGE"] == 90000
    monkeypatch.setenv("RECSYS_METRICS", "false")
    off = create_app({"REDIS_URL": redis_url, "PREFIX": prefix}).test_client()
    assert off.get("/metrics").status_code == 404


def test_gunicorn_conf_cleans_only_metric_files(tmp_path, monkeypatch):
    # importing the config sets PROMETHEUS_MULTIPROC_DIR: keep that out of this process's environment
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "m"))
    monkeypatch.delenv("RECSYS_METRICS_DIR_OWNER", raising=False)  # the import sets it
    monkeypatch.delitem(sys.modules, "lookup_api.gunicorn_conf", raising=False)
    gunicorn_conf = importlib.import_module("lookup_api.gunicorn_conf")
    assert gunicorn_conf.multiproc_dir == str(tmp_path / "m")
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o700  # created private
    (tmp_path / "m" / "counter_123.db").write_bytes(b"old")
    (tmp_path / "m" / "keep.txt").write_text("not ours")
    gunicorn_conf.on_starting(None)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["keep.txt"]


@pytest.mark.slow
def test_prometheus_counts_every_lookup_across_two_gunicorn_workers(publish_small, redis_url, prefix,
                                                                    tmp_path):
    """After N lookups served by `recsys-api -w 2`, PromQL over real scrapes returns exactly N."""
    run_id = publish_small()
    access_log = tmp_path / "access.log"
    env = {"REDIS_URL": redis_url, "RECSYS_PREFIX": prefix, "RECSYS_ACCESS_LOG": str(access_log)}
    known, unknown = list(range(1, 121)), list(range(900_001, 900_081))  # 120 personalized, 80 popular

    def lookups() -> list[dict]:
        lines = [json.loads(line) for line in access_log.read_text().splitlines()]
        return [r for r in lines if r["path"].startswith("/recommendations/")]

    with recsys_api(env, workers=2) as api, \
            prometheus(tmp_path, api.url.removeprefix("http://"), interval="1s") as prom:
        url = api.url
        rounds = 0
        # Concurrent rounds until both workers have served (the kernel may hand a burst of short
        # requests to one of them): the counts must then add up across both workers' files.
        while rounds < 10 and (rounds == 0 or len({r["pid"] for r in lookups()}) < 2):
            with ThreadPoolExecutor(8) as pool:
                docs = list(pool.map(lambda u: get_json(f"{url}/recommendations/{u}"), known + unknown))
            assert [d["source"] for d in docs] == ["personalized"] * 120 + ["popular"] * 80
            rounds += 1
        n = 200 * rounds
        total = f'sum(recsys_api_requests_total{{job="recsys-api",route="{LOOKUP}"}})'
        deadline = time.monotonic() + 30
        while (prom.value(total) or 0) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2.5)  # two more scrapes: the count must stay put, not overshoot
        assert prom.value(total) == n
        by_source = {r["metric"]["source"]: float(r["value"][1]) for r in prom.query(
            f'sum by (source) (recsys_api_requests_total{{route="{LOOKUP}",status="200"}})')}
        assert by_source == {"personalized": 120.0 * rounds, "popular": 80.0 * rounds}
        assert prom.value(f'sum(recsys_api_request_duration_seconds_count{{route="{LOOKUP}"}})') == n
        assert prom.value(f'recsys_live_run_info{{run_id="{run_id}"}}') == 1
        assert 0 <= prom.value("recsys_live_run_age_seconds") < 300
    served = lookups()
    assert len(served) == n and {r["status"] for r in served} == {200}
    assert len({r["pid"] for r in served}) == 2, f"both workers must have served lookups ({rounds} rounds)"
    assert set(served[0]) == {"time", "remote", "method", "path", "query", "status", "bytes",
                               "duration_ms", "user_agent", "pid"}


def test_an_explicit_access_logformat_wins_over_json(publish_small, redis_url, prefix, tmp_path):
    publish_small()
    log = tmp_path / "access.log"
    env = {"REDIS_URL": redis_url, "RECSYS_PREFIX": prefix}
    with recsys_api(env, "--access-logfile", str(log), "--access-logformat", "%(p)s %(r)s") as api:
        get_json(f"{api.url}/recommendations/1")
    lines = [line for line in log.read_text().splitlines() if "/recommendations/1" in line]
    assert len(lines) == 1 and re.fullmatch(r"<\d+> GET /recommendations/1 HTTP/1.1", lines[0]), lines


def test_a_master_started_by_another_keeps_off_its_metrics_directory():
    """kill -USR2 starts a new master as a child of the old one, with its environment."""
    import os
    import subprocess
    import tempfile

    code = "import lookup_api.gunicorn_conf as c, os; print(c.multiproc_dir, os.getpid())"
    old_dir = tempfile.mkdtemp(prefix="recsys-metrics-")  # the old master's fresh directory
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": old_dir, "RECSYS_METRICS_DIR_FRESH": old_dir}
    child = {**env, "RECSYS_METRICS_DIR_OWNER": str(os.getpid())}  # this process plays the old master
    out = subprocess.run([sys.executable, "-c", code], env=child, capture_output=True, text=True, check=True)
    new_dir, _ = out.stdout.split()
    assert new_dir != old_dir and os.path.basename(new_dir).startswith("recsys-metrics-")
    assert not os.path.exists(new_dir), "the new master removes its own fresh directory on exit"
    stranger = {**env, "RECSYS_METRICS_DIR_OWNER": "1"}  # not our parent: a directory we were given
    out = subprocess.run([sys.executable, "-c", code], env=stranger, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split()[0] == old_dir and os.path.isdir(old_dir), "a given directory is left in place"
    os.rmdir(old_dir)


def test_an_empty_multiprocess_dir_writes_nothing_into_the_working_directory(redis_url, prefix, tmp_path):
    """PROMETHEUS_MULTIPROC_DIR="" means unset: no counter_*.db / histogram_*.db land in the cwd."""
    import os
    import subprocess

    code = ("from lookup_api import create_app; app = create_app(); c = app.test_client(); "
            "assert c.get('/healthz').status_code == 200; assert c.get('/metrics').status_code == 200")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": "", "REDIS_URL": redis_url, "RECSYS_PREFIX": prefix,
           "PYTHONPATH": str(ROOT)}
    ran = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert not list(tmp_path.glob("*.db")), sorted(p.name for p in tmp_path.iterdir())
