"""HTTP routes: validate input, ask :class:`~lookup_api.service.Lookup`, serialise JSON."""

from __future__ import annotations

import json
from pathlib import Path

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest  # 400 JSON, from the app's HTTPException handler

from lookup_api.contract.reader import MAX_EXCLUDE, parse_exclude, parse_n
from lookup_api.service import Lookup, NoLiveRun, Result, StoreUnavailable, UnknownMovie

bp = Blueprint("lookup", __name__)

OPENAPI = Path(__file__).with_name("openapi.json")
ANSWER = "recsys.answer"  # the WSGI environ key of a list route's Result (read by lookup_api.metrics)


def _lookup() -> Lookup:
    return current_app.extensions["lookup"]


def _parse_user_id(raw: str, what: str = "user_id") -> int:
    if not raw.isascii() or not raw.isdigit():
        raise BadRequest(f"{what} must be a positive integer, got {raw[:40]!r}")
    value = int(raw)
    if not 1 <= value <= current_app.config["MAX_USER_ID"]:
        raise BadRequest(f"{what} must be between 1 and {current_app.config['MAX_USER_ID']}")
    return value


def _once(name: str) -> str | None:
    given = request.args.getlist(name)
    if len(given) > 1:
        raise BadRequest(f"{name} is given {len(given)} times; give it once")
    return given[0] if given else None


def _parse_exclude() -> frozenset[int]:
    raw = _once("exclude")
    if raw is not None and len(raw) > MAX_EXCLUDE * 11:
        raise BadRequest(f"exclude is {len(raw)} characters long; at most {MAX_EXCLUDE} ids")
    try:
        return parse_exclude(raw, MAX_EXCLUDE, current_app.config["MAX_USER_ID"])
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _parse_n(max_n: int) -> int:
    raw = _once("n")
    try:
        return parse_n(raw, max_n)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _respond(result: Result) -> Response:
    request.environ[ANSWER] = result  # what the request metrics label and count
    head = {"user_id": result.user_id, **(result.head or {}), "source": result.source,
            "run_id": result.run_id, "generated_at": result.generated_at}
    if result.user_id is None:
        del head["user_id"]
    if result.stale:
        head["stale"] = True
    if result.reason:
        head["reason"] = result.reason
    # splice the stored, already-serialised items into the envelope: no parse, no re-encode
    body = json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"items":' + result.items_json + b"}"
    return Response(body, mimetype="application/json")


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


@bp.get("/recommendations/<user_id>")
def recommendations(user_id: str):
    """Return the user's list (popular list for unknown users), without hidden or excluded titles."""
    uid = _parse_user_id(user_id)
    lookup = _lookup()
    n = _parse_n(lookup.max_n())
    return _respond(lookup.recommendations(uid, n, _parse_exclude()))


@bp.get("/popular")
def popular():
    """Return the popular list, or with ``genre=`` that genre's."""
    lookup = _lookup()
    n, exclude, genre = _parse_n(lookup.max_n()), _parse_exclude(), _once("genre")
    if genre is not None:
        valid = lookup.genres()
        if genre not in valid:
            match = [v for v in valid if v.lower() == genre.lower()]
            if not match:
                raise BadRequest(f"unknown genre {genre[:40]!r}; valid genres: {', '.join(valid) or 'none'}")
            genre = match[0]
    return _respond(lookup.popular(n, exclude, genre))


@bp.get("/similar/<movie_id>")
def similar(movie_id: str):
    """Return the movies most like ``movie_id`` ("more like this"), 404 for an unknown movie."""
    mid = _parse_user_id(movie_id, "movie_id")
    lookup = _lookup()
    n = _parse_n(lookup.max_n())
    return _respond(lookup.similar(mid, n, _parse_exclude()))


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
