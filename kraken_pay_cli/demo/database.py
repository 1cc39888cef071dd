"""The demo's Redis: an empty database of the user's, else a Redis started for the demo.

The user's Redis (``REDIS_URL``) is used only in a database the demo finds empty, marks as
its own and empties again on the way out, so it never touches anyone's data; the databases
it tries are :data:`kraken_pay_cli.local.databases.DEMO`, apart from the test suite's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import redis

from kraken_pay_cli.app import redact
from kraken_pay_cli.local import databases, redis_answers, redis_db, redis_server

__all__ = ["DemoError", "demo_redis"]

_OWNER_KEY = "kraken-pay-demo:owner"


class DemoError(Exception):
    """Something the demo needs is missing; the message says what to do."""


def demo_redis(stack: contextlib.ExitStack) -> tuple[str, str]:
    """(URL, description): a free database of the user's Redis, else one started here."""
    from tasks.settings import DEFAULT_REDIS_URL

    user_url = os.environ.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL
    if redis_answers(user_url):
        url = _claim_database(user_url)
        if url is not None:
            stack.callback(_empty_database, url)
            db = urlsplit(url).path.lstrip("/")
            return url, f"{redact(user_url)}, database {db} (was empty; emptied on exit)"
    if shutil.which("redis-server"):
        where = "a redis-server started for the demo"
    else:
        where = "fakeredis's server in this process (no redis-server installed)"
    try:
        url = stack.enter_context(redis_server(None))
    except ImportError:
        raise DemoError(
            f"no Redis: none answers at {redact(user_url)}, redis-server is not installed, and "
            "fakeredis is missing (pip install 'kraken-pay-cancel[test]')"
        ) from None
    return url, f"{where} at {url}"


def _claim_database(url: str) -> str | None:
    """The URL of an empty database, marked as the demo's so another demo passes it by."""
    for db in databases.DEMO:
        candidate = redis_db(url, db)
        client = redis.Redis.from_url(candidate)
        try:
            if client.dbsize() == 0 and client.set(_OWNER_KEY, os.getpid(), nx=True):
                if client.dbsize() == 1:
                    return candidate
                client.delete(_OWNER_KEY)  # someone else started using it at the same time
        except redis.ResponseError:  # "DB index is out of range": fewer databases configured
            continue
        finally:
            client.close()
    return None


def _empty_database(url: str) -> None:
    """Delete every key of the demo's database: it was empty when the demo took it."""
    client = redis.Redis.from_url(url)
    try:
        for batch in _batches(client.scan_iter(count=1000), 1000):
            client.unlink(*batch)
    except redis.RedisError:
        pass  # the server went away; nothing is left to clean
    finally:
        client.close()


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
