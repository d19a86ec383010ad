"""Prometheus metrics for the lookup API: ``GET /metrics``, requests, latency, fallbacks, Redis, live run.

Every series and label is listed in docs/observability.md.  ``init_metrics(app)`` stamps each
request's start in the WSGI environ, adds one ``after_request`` hook and no Redis call on the
lookup path; its counting function (``app.extensions[RECORD]``) also counts the fast path's
answers.  The live run's id and age (and ``RECSYS_MAX_RUN_AGE``, whose check is
:meth:`~lookup_api.service.Lookup.ready`'s) are read at scrape time, except while the lookup's
circuit breaker keeps requests off Redis.  Under gunicorn the workers share the counters through
prometheus_client's multiprocess mode (``lookup_api/gunicorn_conf.py`` sets
``PROMETHEUS_MULTIPROC_DIR``); without it they live in the app's own registry.
``RECSYS_METRICS=false`` turns all of this off.
"""

from __future__ import annotations

import logging
import os
import time

import redis
from flask import Flask, Response, request

# Set but empty means unset: prometheus_client would otherwise pick its multiprocess mode with the
# directory "" and write its .db files into the working directory.  (Before its first import.)
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

from lookup_api.contract.keys import Keys
from lookup_api.contract.meta import F
from lookup_api.contract.reader import RunReader
from lookup_api.service import REASONS, Breaker
from lookup_api.views import ANSWER

log = logging.getLogger(__name__)

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UNMATCHED = "<unmatched>"
STARTED = "recsys.started"  # the WSGI environ key of the request's perf_counter() start
RECORD = "recsys.record"  # app.extensions key of the function that counts one answered request


def error_kind(exc: BaseException) -> str:
    """Return the ``kind`` label of a failed Redis call: timeout, connection or error."""
    if isinstance(exc, redis.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, redis.ConnectionError | ConnectionError | OSError):
        return "connection"
    return "error"


def instrument_client(client: redis.Redis, errors: Counter) -> None:
    """Count every failed command and pipeline of ``client`` in ``errors`` (the call still raises)."""
    failures = (redis.RedisError, redis.exceptions.RedisClusterException, OSError)

    def counted(call):
        def wrapper(*args, **kwargs):
            try:
                return call(*args, **kwargs)
            except failures as exc:
                errors.labels(error_kind(exc)).inc()
                raise

        return wrapper

    make_pipeline = client.pipeline

    def pipeline(*args, **kwargs):
        pipe = make_pipeline(*args, **kwargs)
        pipe.execute = counted(pipe.execute)
        return pipe

    client.execute_command = counted(client.execute_command)  # every command goes through it
    client.pipeline = pipeline


class LiveRunCollector:
    """Read the live run from Redis at scrape time: its id, its age and the configured maximum."""

    def __init__(self, client: redis.Redis, keys: Keys, max_age: float, breaker: Breaker | None = None):
        self.client, self.keys, self.max_age, self.breaker = client, keys, max_age, breaker or Breaker(0)
        self.reader = RunReader(client, keys)

    def describe(self):
        """Declare nothing up front (no Redis call when registering)."""
        return []

    def collect(self):
        """Yield the live-run metrics (none when Redis fails or nothing is published)."""
        if self.max_age > 0:
            yield GaugeMetricFamily("recsys_live_run_max_age_seconds",
                                    "Configured maximum age of the live run (RECSYS_MAX_RUN_AGE).",
                                    value=self.max_age)
        if not self.breaker.allow():
            return
        try:
            with self.breaker.guard():
                run_id = self.reader.current()
                created = self.reader.meta_fields(run_id, F.created_ts).created_ts if run_id else None
        except (redis.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
            log.warning("metrics: cannot read the live run (%s)", type(exc).__name__)
            return
        if run_id is None:
            return
        yield InfoMetricFamily("recsys_live_run", "The run the API serves (recsys:current).",
                               value={"run_id": run_id})
        if created is not None:
            yield GaugeMetricFamily("recsys_live_run_age_seconds",
                                    "Seconds since the live run was created.",
                                    value=max(time.time() - created, 0.0))


def _registries() -> tuple[CollectorRegistry, CollectorRegistry]:
    """Return (registry the metrics are created in, registry /metrics exposes)."""
    own = CollectorRegistry(auto_describe=True)
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return own, own
    from prometheus_client import multiprocess

    from lookup_api.paths import private_dir

    private_dir(directory, "PROMETHEUS_MULTIPROC_DIR")  # ours and 0700 (gunicorn_conf checked it too)

    scrape = CollectorRegistry()
    multiprocess.MultiProcessCollector(scrape)  # sums the files every worker writes
    return own, scrape


def init_metrics(app: Flask) -> None:
    """Add ``/metrics`` and the request hooks to ``app``."""
    if not app.config["METRICS"]:
        return
    own, scrape = _registries()
    requests = Counter("recsys_api_requests", "HTTP requests by route, status and answer source.",
                       ["route", "status", "source"], registry=own)
    latency = Histogram("recsys_api_request_duration_seconds", "Time to handle a request (Flask).",
                        ["route"], buckets=BUCKETS, registry=own)
    errors = Counter("recsys_api_redis_errors", "Failed Redis calls by kind (timeout, connection, error).",
                     ["kind"], registry=own)
    fallbacks = Counter("recsys_api_fallbacks", "Answers that are not the user's own list from the live run, "
                        "by reason (missing, empty, unavailable, no-current).", ["reason"], registry=own)
    for reason in REASONS:
        fallbacks.labels(reason)
    dropped = Counter("recsys_api_dropped_items", "Items skipped to fill a served list, by why: a hidden "
                      "title (recsys-batch hide) or an id of the request's exclude=.", ["kind"], registry=own)
    for kind in ("hidden", "excluded"):
        dropped.labels(kind)
    dropped_hidden, dropped_excluded = dropped.labels("hidden"), dropped.labels("excluded")
    # exported at 0 from the start, so increase()/rate() see the first error (a series born at 1 shows none)
    for kind in ("timeout", "connection", "error"):
        errors.labels(kind)
    for rule in app.url_map.iter_rules():
        for status in ("500", "503"):
            requests.labels(rule.rule, status, "")
    lookup = app.extensions["lookup"]
    instrument_client(lookup.client, errors)
    scrape.register(LiveRunCollector(lookup.client, lookup.keys, lookup.max_age, lookup.breaker))
    children: dict[tuple, tuple] = {}  # (route, status, source) -> (counter child, histogram child)

    def record(route: str | None, status: int, answer, started: float | None) -> None:
        """Count one answered request: ``route`` (the URL rule, None: unmatched), ``answer`` (a list
        route's Result, else None), ``started`` (its perf_counter() start, None: unknown)."""
        source = "" if answer is None else "stale" if answer.stale else answer.source
        key = (UNMATCHED if route is None else route, status, source)
        pair = children.get(key)
        if pair is None:
            pair = children[key] = (requests.labels(key[0], str(status), source), latency.labels(key[0]))
        pair[0].inc()
        if started is not None:
            pair[1].observe(time.perf_counter() - started)
        if answer is not None:
            if answer.reason:
                fallbacks.labels(answer.reason).inc()
            if answer.hidden:
                dropped_hidden.inc(answer.hidden)
            if answer.excluded:
                dropped_excluded.inc(answer.excluded)

    app.extensions[RECORD] = record  # the fast path counts its answers by it too
    wsgi_app = app.wsgi_app

    def timed(environ, start_response):
        """Stamp the request's start (cheaper than a Flask before_request hook), unless the fast path
        stamped it before handing the request on."""
        if STARTED not in environ:
            environ[STARTED] = time.perf_counter()
        return wsgi_app(environ, start_response)

    app.wsgi_app = timed

    @app.after_request
    def _record(response: Response) -> Response:
        environ, rule = request.environ, request.url_rule
        record(None if rule is None else rule.rule, response.status_code, environ.get(ANSWER),
               environ.get(STARTED))
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        """Serve the Prometheus text format (every worker's counters, summed)."""
        return Response(generate_latest(scrape), content_type=CONTENT_TYPE_LATEST)
