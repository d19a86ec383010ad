"""Flask application factory: configuration, the injected Redis client, JSON errors."""

from __future__ import annotations

import logging
import os

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, NotFound

from lookup_api import where
from lookup_api.contract.connection import connect
from lookup_api.contract.keys import DEFAULT_PREFIX, MAX_ID, Keys
from lookup_api.fastpath import FastPath
from lookup_api.metrics import init_metrics
from lookup_api.service import Lookup
from lookup_api.views import bp

log = logging.getLogger(__name__)

DEFAULTS = {
    "REDIS_URL": None,  # unset: embedded redis-server under EMBEDDED_DIR (quickstart)
    "PREFIX": DEFAULT_PREFIX,
    "EMBEDDED_DIR": None,  # default: $RECSYS_EMBEDDED_DIR, else <checkout>/data/redis (lookup_api.paths)
    "REDIS_SOCKET_TIMEOUT": 1.0,  # seconds per Redis call: no request waits longer on Redis
    "REDIS_CONNECT_TIMEOUT": 0.5,
    "POINTER_TTL": 1.0,  # seconds the live run id is cached in-process
    "LIST_CACHE_SIZE": 20_000,  # user lists of the live run cached per process (0: off)
    "RETRY_AFTER": 1.0,  # seconds to serve stale answers without asking Redis after a timeout (doubling)
    "BREAKER_MAX": 4.0,  # ... up to this many seconds between two probes of a Redis that keeps timing out
    "MAX_RUN_AGE": 0,  # seconds; > 0: /readyz is 503 while the live run is older (RECSYS_MAX_RUN_AGE)
    "MAX_USER_ID": MAX_ID,  # the batch refuses larger ids at load, `show` too
    "METRICS": True,  # RECSYS_METRICS=false: no /metrics, no request hooks
    "FAST_PATH": True,  # RECSYS_FAST_PATH=false: the list routes through Flask too (lookup_api.fastpath)
}


def create_app(config: dict | None = None) -> Flask:
    """Create the app: defaults, then ``RECSYS_*`` env (and ``REDIS_URL``), then ``config``.

    ``config`` may carry ``REDIS_CLIENT`` (an existing redis client) to inject.
    """
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("RECSYS")
    if os.environ.get("REDIS_URL"):
        app.config["REDIS_URL"] = os.environ["REDIS_URL"]
    if config:
        app.config.update(config)
    app.json.sort_keys = False
    app.json.compact = True
    app.url_map.merge_slashes = False  # '//' is a 404 JSON, not an HTML redirect

    client = app.config.get("REDIS_CLIENT") or connect(
        app.config["REDIS_URL"],
        embedded_dir=app.config["EMBEDDED_DIR"],
        socket_timeout=float(app.config["REDIS_SOCKET_TIMEOUT"]),
        connect_timeout=float(app.config["REDIS_CONNECT_TIMEOUT"]),
        retries=1,
        retry_timeouts=False,  # a hung Redis costs a request one timeout, never two
    )
    app.extensions["lookup"] = Lookup(
        client,
        Keys(app.config["PREFIX"]),
        pointer_ttl=float(app.config["POINTER_TTL"]),
        cache_size=int(app.config["LIST_CACHE_SIZE"]),
        retry_after=float(app.config["RETRY_AFTER"]),
        max_age=float(app.config["MAX_RUN_AGE"] or 0),
        breaker_cap=float(app.config["BREAKER_MAX"]),
    )
    if app.config.get("REDIS_CLIENT") is None:  # the one start-up line: where this process reads from
        log.info("lookup API, prefix %s: %s", app.config["PREFIX"],
                 where.describe(redis_url=app.config["REDIS_URL"], embedded=app.config["EMBEDDED_DIR"]))
    app.register_blueprint(bp)
    init_metrics(app)  # /metrics, request metrics, the live run's age
    if app.config["FAST_PATH"]:  # outermost: the plain list requests never reach Flask
        app.wsgi_app = FastPath(app, app.wsgi_app)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=exc.description, status=exc.code), exc.code

    @app.before_request
    def no_leading_double_slash() -> None:
        """Answer ``//recommendations/42`` 404, as ``/recommendations//42`` (werkzeug drops leading ``/``)."""
        if request.environ.get("PATH_INFO", "").startswith("//"):
            raise NotFound()

    @app.after_request
    def options(response: Response) -> Response:
        """Answer OPTIONS with 204 and the Allow header (Flask's automatic answer is an HTML 200)."""
        if request.method == "OPTIONS" and response.status_code == 200:
            response.status_code, response.data = 204, b""
            del response.headers["Content-Type"]
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return jsonify(error="internal error", status=500), 500

    return app
