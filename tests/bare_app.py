"""A bare Flask app returning constant JSON: the load test's reference point."""

from flask import Flask, jsonify


def create_app() -> Flask:
    """Return an app with ``/constant`` and ``/healthz`` only."""
    app = Flask(__name__)

    @app.get("/constant")
    def constant():
        return jsonify(status="ok", items=[1, 2, 3])

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    return app
