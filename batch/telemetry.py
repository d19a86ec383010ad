"""Run telemetry for the batch: figures in the run meta, the status report, a Pushgateway push,
JSON log lines.

Pushed as job ``recsys-batch``, grouped by the key ``prefix``; every series is listed in
docs/observability.md.  A success replaces the group; a failure adds its metrics to it (the last
success time stays).  A push that fails logs a warning and never fails the run.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from datetime import UTC, datetime

from lookup_api.contract.meta import F, RunMeta

log = logging.getLogger(__name__)

JOB = "recsys-batch"
PUSH_TIMEOUT = 10.0  # seconds


def meta_fields(empty_lists: int, popular_items: int) -> dict:
    """Return the telemetry fields a published run records in its meta (:class:`RunMeta` keywords)."""
    return {F.empty_lists: empty_lists, F.popular_items: popular_items, F.success: True,
            F.last_success_ts: time.time()}


def age_seconds(meta: RunMeta | None, now: float | None = None) -> float | None:
    """Return how old the run described by ``meta`` is (None without ``created_ts``)."""
    created = meta.created_ts if meta else None
    return None if created is None else max((now or time.time()) - created, 0.0)


def format_age(seconds: float) -> str:
    """Return ``seconds`` as ``2d 3h``, ``3h 12m``, ``4m 10s`` or ``9s``."""
    s = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit} {s % size // sub_size}{sub}"
    return f"{s}s"


def status_report(open_store, as_json: bool = False) -> str:
    """Return what ``recsys-batch status`` prints: the live run, its age, its meta (timings: every
    stage, publish, total) and the run history, newest first; ``as_json``: typed JSON.

    ``open_store()`` returns the :class:`~lookup_api.contract.reader.RunReader`; when it finds no
    embedded server to read (EmbeddedError), that is why there is no live run.
    """
    from lookup_api.embedded_redis import EmbeddedError

    try:
        store, why = open_store(), None
    except EmbeddedError as exc:  # no embedded server: nothing published there (or why it cannot be read)
        store, why = None, str(exc)
    live = store.current() if store is not None else None
    history = store.runs() if store is not None else []
    meta = store.meta(live) if live else None
    age = age_seconds(meta)
    if as_json:
        return json.dumps({"current": live, "age_seconds": age, "meta": meta.as_dict() if meta else {},
                           "runs": [{"run_id": r, "created_ts": s} for r, s in history]}, indent=2)
    if live is None:
        return f"no live run: {why or 'nothing has been published yet (run `recsys-batch run`)'}"
    lines = [f"live run: {live}" + (f" (age {format_age(age)})" if age is not None else "")]
    typed = meta.as_dict() if meta else {}
    for key, value in sorted((meta.to_hash() if meta else {}).items()):
        if key == F.timings and isinstance(typed.get(key), dict):
            value = ", ".join(f"{k} {v:.2f}s" for k, v in typed[key].items())
        lines.append(f"  {key}: {value}")
    lines.append("history (newest first):")
    lines += [f"  {'*' if run_id == live else ' '} {run_id}" for run_id, _ in history]
    return "\n".join(lines)


def success_registry(result, finished: float):
    """Return a registry holding a published run's metrics (``result``: a JobResult)."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float, **labels: str) -> None:
        metric = Gauge(name, doc, list(labels), registry=registry)
        (metric.labels(**labels) if labels else metric).set(value)

    gauge("recsys_batch_success", "1 if the last batch run published, 0 if it failed.", 1)
    gauge("recsys_batch_last_success_timestamp_seconds", "When the last batch run published.", finished)
    stages = Gauge("recsys_batch_stage_duration_seconds", "Seconds per stage of the last published run.",
                   ["stage"], registry=registry)
    for stage, seconds in result.timings.items():
        stages.labels(stage).set(seconds)
    gauge("recsys_batch_users", "Users ranked (and published) by the last run.", result.users)
    gauge("recsys_batch_items", "Movies in the last published run's data.", result.items)
    gauge("recsys_batch_ratings", "Ratings the last published run trained on.", result.ratings)
    gauge("recsys_batch_empty_lists", "Users whose list came out empty.", result.empty_lists)
    gauge("recsys_batch_popular_items", "Length of the published popular (fallback) list.",
          result.popular_items)
    gauge("recsys_batch_broken_runs_deleted", "Complete runs the last run deleted because keys of theirs "
          "were gone (evicted?).", len(result.published.broken) if result.published else 0)
    gauge("recsys_batch_run_info", "The last published run.", 1, run_id=result.run_id)
    return registry


def failure_registry(error: BaseException, failed: float):
    """Return a registry holding a failed run's metrics."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    Gauge("recsys_batch_success", "1 if the last batch run published, 0 if it failed.",
          registry=registry).set(0)
    Gauge("recsys_batch_last_failure_timestamp_seconds", "When a batch run last failed.",
          registry=registry).set(failed)
    Gauge("recsys_batch_failure_info", "The last failure's exception type.", ["error"],
          registry=registry).labels(type(error).__name__).set(1)
    return registry


def push(gateway: str, registry, prefix: str, replace: bool) -> bool:
    """Push ``registry`` to the Pushgateway (replace the group, or add to it); warn on failure."""
    from prometheus_client import push_to_gateway, pushadd_to_gateway

    from lookup_api.contract.connection import redact_url

    send = push_to_gateway if replace else pushadd_to_gateway
    shown = redact_url(gateway)  # a gateway URL may carry user:password@
    try:
        send(gateway, job=JOB, registry=registry, grouping_key={"prefix": prefix}, timeout=PUSH_TIMEOUT)
    except Exception as exc:  # monitoring must never fail the run
        log.warning("could not push metrics to the Pushgateway %s: %s", shown,
                    str(exc).replace(gateway, shown))
        return False
    log.info("pushed run metrics to %s (job %s, prefix %s)", shown, JOB, prefix)
    return True


def _json_logs() -> bool:
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def reported(func):
    """Wrap ``run``: log its stages, push its metrics to ``pushgateway`` (if given), success or not.

    One line per fact: the stage timings are one line (JSON logs: one record per stage, with
    ``run_id``, ``stage``, ``seconds``).  A failure's record (``stage: failed``) is at ERROR in
    JSON logs only; in text logs the CLI's own ``Error:`` line says it, so the record is at DEBUG.
    """

    @functools.wraps(func)
    def wrapper(obj, *args, pushgateway: str | None = None, **kwargs):
        try:
            result = func(obj, *args, **kwargs)
        except (Exception, KeyboardInterrupt) as exc:  # Ctrl-C and SIGTERM stop a run too
            error = type(exc).__name__
            log.log(logging.ERROR if _json_logs() else logging.DEBUG, "batch run failed: %s: %s", error,
                    exc or "interrupted", extra={"stage": "failed", "error": error})
            if pushgateway:
                push(pushgateway, failure_registry(exc, time.time()), obj.prefix, replace=False)
            raise
        if _json_logs():  # run_id, stage, seconds: fields of the JSON logs
            for stage, seconds in result.timings.items():
                log.info("run %s stage %s: %.3fs", result.run_id, stage, seconds,
                         extra={"run_id": result.run_id, "stage": stage, "seconds": round(seconds, 3)})
        else:
            log.info("%s stages: %s", "dry run" if kwargs.get("dry_run") else f"run {result.run_id}",
                     ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
        if pushgateway and not kwargs.get("dry_run"):
            push(pushgateway, success_registry(result, time.time()), obj.prefix, replace=True)
        return result

    return wrapper


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and run_id/stage/seconds when set."""

    FIELDS = ("run_id", "stage", "seconds", "error")

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of JSON."""
        doc = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        doc.update({k: getattr(record, k) for k in self.FIELDS if hasattr(record, k)})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def use_json_logs() -> None:
    """Make every root handler write JSON lines."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())
