"""The contract between the batch job and the lookup API: the one thing both processes import.

Standard library plus redis-py only (no Flask, no model libraries): the key schema (``keys``), the
stored-item format (``items``), opening a client on a URL or on the one embedded server of a directory
(``connection``, ``embedded``).  ``batch/`` imports nothing else of ``lookup_api``.
"""
