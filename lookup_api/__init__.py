"""Read-only lookup API over the lists the batch job published to Redis.

``create_app`` is imported lazily so that the batch job can use ``lookup_api.contract.keys`` and
``lookup_api.contract.connection`` without Flask installed.  Serve with
``gunicorn 'lookup_api:create_app()'``.
"""

from __future__ import annotations


def create_app(config: dict | None = None):
    """Build the Flask app (see :func:`lookup_api.app.create_app`)."""
    from lookup_api.app import create_app as _create_app

    return _create_app(config)
