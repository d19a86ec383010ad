"""HTTP routes: validate input, ask :class:`~lookup_api.service.Lookup`, serialise JSON.

:func:`answer` (the list routes' rule) and :func:`body` (their bytes) are shared with
:mod:`lookup_api.fastpath`, which serves the plain list requests without Flask's request context.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest  # 400 JSON, from the app's HTTPException handler

from lookup_api.contract.reader import MAX_EXCLUDE, parse_exclude, parse_n
from lookup_api.service import Lookup, NoLiveRun, Result, StoreUnavailable, UnknownMovie

bp = Blueprint("lookup", __name__)

OPENAPI = Path(__file__).with_name("openapi.json")
ANSWER = "recsys.answer"  # the WSGI environ key of a list route's Result (read by lookup_api.metrics)
FAILED = "recsys.failed"  # the WSGI environ key of what a list route raised on the fast path
JSON = "application/json"
# the list routes' endpoints (the blueprint's names)
RECOMMENDATIONS, POPULAR_ROUTE, SIMILAR_ROUTE = "recommendations", "popular", "similar"
LIST_ROUTES = (RECOMMENDATIONS, POPULAR_ROUTE, SIMILAR_ROUTE)


def _lookup() -> Lookup:
    return current_app.extensions["lookup"]


def _id(raw: str, what: str, max_id: int) -> int:
    if not raw.isascii() or not raw.isdigit():
        raise BadRequest(f"{what} must be a positive integer, got {raw[:40]!r}")
    value = int(raw)
    if not 1 <= value <= max_id:
        raise BadRequest(f"{what} must be between 1 and {max_id}")
    return value


def _once(getlist: Callable[[str], Sequence[str]], name: str) -> str | None:
    given = getlist(name)
    if len(given) > 1:
        raise BadRequest(f"{name} is given {len(given)} times; give it once")
    return given[0] if given else None


def _n_exclude(lookup: Lookup, getlist, max_id: int) -> tuple[int, frozenset[int]]:
    try:
        n = parse_n(_once(getlist, "n"), lookup.max_n())
        raw = _once(getlist, "exclude")
        if raw is not None and len(raw) > MAX_EXCLUDE * 11:
            raise ValueError(f"exclude is {len(raw)} characters long; at most {MAX_EXCLUDE} ids")
        return n, parse_exclude(raw, MAX_EXCLUDE, max_id)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def answer(lookup: Lookup, endpoint: str, target: str | None, getlist, max_id: int) -> Result:
    """Answer one list route (the rule both the Flask views and :mod:`lookup_api.fastpath` serve by).

    ``endpoint``: :data:`RECOMMENDATIONS`, :data:`POPULAR_ROUTE` or :data:`SIMILAR_ROUTE`;
    ``target``: the path's id (None for the popular list); ``getlist(name)``: the query's values of
    ``name``.  Raises BadRequest (400), NoLiveRun (503), UnknownMovie (404), StoreUnavailable or a
    Redis error (503), which the blueprint's handlers turn into JSON.
    """
    if endpoint == RECOMMENDATIONS:
        uid = _id(target, "user_id", max_id)
        n, exclude = _n_exclude(lookup, getlist, max_id)
        return lookup.recommendations(uid, n, exclude)
    if endpoint == SIMILAR_ROUTE:
        mid = _id(target, "movie_id", max_id)
        n, exclude = _n_exclude(lookup, getlist, max_id)
        return lookup.similar(mid, n, exclude)
    n, exclude = _n_exclude(lookup, getlist, max_id)
    genre = _once(getlist, "genre")
    if genre is not None:
        valid = lookup.genres()
        if genre not in valid:
            match = [v for v in valid if v.lower() == genre.lower()]
            if not match:
                raise BadRequest(f"unknown genre {genre[:40]!r}; valid genres: {', '.join(valid) or 'none'}")
            genre = match[0]
    return lookup.popular(n, exclude, genre)


def body(result: Result) -> bytes:
    """Return a list route's JSON: the envelope, with the stored, already-serialised items spliced
    in (no parse, no re-encode)."""
    head = tuple(result.head.items()) if result.head else ()
    fields = _fields(head, result.source, result.run_id, result.generated_at, result.stale, result.reason)
    start = b"{" if result.user_id is None else b'{"user_id":%d,' % result.user_id
    return start + fields + b',"items":' + result.items_json + b"}"


@lru_cache(maxsize=8192)
def _fields(head: tuple, source: str, run_id: str, generated_at: str | None, stale: bool,
            reason: str | None) -> bytes:
    """Return the envelope's fields after ``user_id`` as JSON without braces (few distinct: cached)."""
    doc = {**dict(head), "source": source, "run_id": run_id, "generated_at": generated_at}
    if stale:
        doc["stale"] = True
    if reason:
        doc["reason"] = reason
    return json.dumps(doc, separators=(",", ":")).encode()[1:-1]


def _respond(endpoint: str, target: str | None = None) -> Response:
    environ = request.environ
    failed = environ.get(FAILED)  # raised on the fast path already: answered here, not asked again
    if failed is not None:
        raise failed
    result = answer(_lookup(), endpoint, target, request.args.getlist, current_app.config["MAX_USER_ID"])
    environ[ANSWER] = result  # what the request metrics label and count
    return Response(body(result), mimetype=JSON)


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message, status=status), status


@bp.errorhandler(NoLiveRun)
def no_live_run(exc: NoLiveRun):
    """Answer 503 JSON before the first run is published."""
    return _error(503, f"not ready: {exc}")


@bp.errorhandler(StoreUnavailable)
@bp.errorhandler(redis.RedisError)
@bp.errorhandler(redis.exceptions.RedisClusterException)
def store_unavailable(exc: Exception):
    """Answer 503 JSON when Redis fails and nothing cached can stand in."""
    return _error(503, "recommendation store unavailable; retry shortly")


@bp.errorhandler(UnknownMovie)
def unknown_movie(exc: UnknownMovie):
    """Answer 404 JSON for a movie the live run has no "more like this" list for."""
    return _error(404, f"movie {exc.args[0]} is unknown to the live run")


@bp.get("/recommendations/<user_id>", endpoint=RECOMMENDATIONS)
def recommendations(user_id: str):
    """Return the user's list (popular list for unknown users), without hidden or excluded titles."""
    return _respond(RECOMMENDATIONS, user_id)


@bp.get("/popular", endpoint=POPULAR_ROUTE)
def popular():
    """Return the popular list, or with ``genre=`` that genre's."""
    return _respond(POPULAR_ROUTE)


@bp.get("/similar/<movie_id>", endpoint=SIMILAR_ROUTE)
def similar(movie_id: str):
    """Return the movies most like ``movie_id`` ("more like this"), 404 for an unknown movie."""
    return _respond(SIMILAR_ROUTE, movie_id)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers (no Redis call)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Readiness: Redis answers and a live run exists."""
    ready, reason = _lookup().ready()
    return jsonify(status="ready" if ready else "not ready", reason=reason), 200 if ready else 503


@bp.get("/openapi.json")
def openapi():
    """Serve the OpenAPI description."""
    return Response(OPENAPI.read_bytes(), mimetype="application/json")
