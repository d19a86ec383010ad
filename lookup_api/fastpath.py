"""The list routes' hot path: answered straight from WSGI, without Flask's request context.

Per request Flask spends about 30 µs of CPU on its request and app contexts, URL matching,
hooks, signals and response object, more than the lookup itself (about 10 µs with the cache
warm), and under gunicorn's threads that cost is paid holding the GIL.  :class:`FastPath` sits
in front of the Flask app (``app.wsgi_app``) and answers ``GET /recommendations/<user_id>``,
``GET /popular`` and ``GET /similar/<movie_id>`` by the same rule
(:func:`lookup_api.views.answer`), the same bytes (:func:`lookup_api.views.body`) and the same
metrics (``lookup_api.metrics``' recorder) as the Flask views, which stay the reference: a test
sends every kind of request both ways and compares status, headers and body.

It takes a request only when it is plain: method GET, one of those paths with an ASCII id,
and a query of ASCII letters, digits and ``_.,=&-`` only (nothing percent-encoded, so its parse
cannot differ from werkzeug's).  Anything else goes to Flask unchanged, and so does every
error: what :func:`~lookup_api.views.answer` raised travels in the environ (``views.FAILED``),
and the Flask view raises it again, so Flask's handlers answer it without asking Redis twice.
``RECSYS_FAST_PATH=false`` sends every request through Flask.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qsl

from flask import Flask

from lookup_api.metrics import RECORD, STARTED
from lookup_api.views import (
    FAILED,
    JSON,
    LIST_ROUTES,
    POPULAR_ROUTE,
    RECOMMENDATIONS,
    SIMILAR_ROUTE,
    answer,
    body,
)

_PLAIN_QUERY = re.compile(r"[A-Za-z0-9_.,=&-]*")
_HEADERS = "Content-Type", JSON
_OK = "200 OK"


class FastPath:
    """WSGI middleware: the plain list requests answered here, everything else by ``app``."""

    def __init__(self, app: Flask, wsgi_app):
        self.next = wsgi_app
        self.lookup = app.extensions["lookup"]
        self.max_id = app.config["MAX_USER_ID"]
        self.record = app.extensions.get(RECORD)  # None: metrics off
        rules = {rule.endpoint.rpartition(".")[2]: rule.rule for rule in app.url_map.iter_rules()}
        self.rules = {name: rules[name] for name in LIST_ROUTES}  # the metrics' route labels
        # path prefix -> endpoint (a prefix ends in "/": the id follows); "/popular" is exact
        self.prefixes = {self.rules[RECOMMENDATIONS].partition("<")[0]: RECOMMENDATIONS,
                         self.rules[SIMILAR_ROUTE].partition("<")[0]: SIMILAR_ROUTE}
        self.exact = {self.rules[POPULAR_ROUTE]: POPULAR_ROUTE}

    def _route(self, path: str) -> tuple[str, str | None] | None:
        """Return (endpoint, the path's id) for a list route's path, else None."""
        endpoint = self.exact.get(path)
        if endpoint is not None:
            return endpoint, None
        head, sep, target = path.rpartition("/")
        endpoint = self.prefixes.get(head + sep)
        if endpoint is None or not target or not target.isascii():
            return None
        return endpoint, target

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "GET":
            return self.next(environ, start_response)
        started = environ[STARTED] = time.perf_counter()  # a request handed on is timed from here too
        route = self._route(environ.get("PATH_INFO", ""))
        query = environ.get("QUERY_STRING", "")
        if route is None or _PLAIN_QUERY.fullmatch(query) is None:
            return self.next(environ, start_response)
        endpoint, target = route
        args: dict[str, list[str]] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            args.setdefault(name, []).append(value)
        try:
            result = answer(self.lookup, endpoint, target, lambda name: args.get(name, ()), self.max_id)
        except Exception as exc:  # answered by Flask's handlers (400, 404, 503, 500), not asked again
            environ[FAILED] = exc
            return self.next(environ, start_response)
        out = body(result)
        start_response(_OK, [_HEADERS, ("Content-Length", str(len(out)))])
        if self.record is not None:
            self.record(self.rules[endpoint], 200, result, started)
        return [out]
