"""The contract between the batch job and the lookup API: the one thing both processes import.

Standard library plus redis-py only (no Flask, no model libraries), so either side imports it
without pulling in the other's dependencies.  ``batch/`` imports nothing else of ``lookup_api``.

- :mod:`~lookup_api.contract.keys`: the Redis key schema under a configurable prefix, run ids.
- :mod:`~lookup_api.contract.connection`: opening a client (URL, cluster or the embedded
  server), what "unavailable" looks like and what a failed connection ran into, password redaction.
- :mod:`~lookup_api.contract.embedded`: the one embedded redis-server per directory (no
  ``REDIS_URL``), shared by the batch, the CLI and every API worker.
"""
