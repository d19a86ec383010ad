"""What every ``recsys-batch`` command shares: the context object and clean error handling."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import click

from batch.artifacts import ArtifactsError
from batch.download import RELEASES, DownloadError
from batch.movielens import DataError
from batch.params import ParamError
from batch.store import RunStore, StoreError, redis_errors
from lookup_api.contract.connection import connect, describe, redact_url
from lookup_api.contract.keys import Keys

log = logging.getLogger("batch")


class Context:
    """Options shared by every command (``ctx.obj``); the Redis client is opened lazily."""

    def __init__(self, redis_url: str | None, prefix: str, data_dir: Path, dataset: str = "ml-1m"):
        self.redis_url, self.prefix, self.data_dir = redis_url or None, prefix, data_dir
        self.release = RELEASES[dataset]
        self._store: RunStore | None = None

    def store(self) -> RunStore:
        """Return the RunStore on the configured Redis (connected and pinged on first use)."""
        if self._store is None:
            with redis_errors(self.redis_url):
                client = connect(self.redis_url)
                client.ping()
            log.info("redis: %s", describe(client) if self.redis_url is None else redact_url(self.redis_url))
            self._store = RunStore(client, Keys(self.prefix))
        return self._store


def fail_cleanly(func):
    """Turn library errors into ClickException (one line, exit 1)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (DataError, DownloadError, StoreError, ParamError, ArtifactsError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper
