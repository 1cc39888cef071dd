"""Shared fixtures: a real Redis (started when none answers), never a silent skip."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis
from tasks_support import ScriptedClient

from kraken_pay_cli.local import databases, redis_db, redis_server
from tasks.ledger import Ledger
from tasks.ledger import override as override_ledger
from tasks.settings import DEFAULT_REDIS_URL, Settings, forget, override

TEST_REDIS_URL = os.environ.get("REDIS_URL") or redis_db(DEFAULT_REDIS_URL, databases.TEST_DEFAULT)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server for tests "across workers"; flushed before each use."""
    with redis_server(TEST_REDIS_URL) as url:
        yield url


@pytest.fixture
def redis_sync(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def kraken_settings() -> Iterator[Callable[..., Settings]]:
    """``kraken_settings(**values)``: the standalone app's tasks see these settings."""
    from tasks.celery import app

    def use(**values: Any) -> Settings:
        settings = Settings(**values)
        override(app, settings)
        return settings

    yield use
    forget(app)


@pytest.fixture(autouse=True)
def _ledger_in_fakeredis() -> Iterator[Ledger]:
    """The test process's ledger (what ``delay`` records) lives in fakeredis; workers keep
    theirs in the real Redis their environment names. A test that needs the test process's
    entries in a real Redis overrides it again."""
    from tasks.celery import app

    ledger = Ledger(fakeredis.FakeRedis(), "kraken")
    override_ledger(app, ledger)
    yield ledger
    override_ledger(app, None)


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedClient]]:
    """``scripted(*steps)`` installs a ScriptedClient as the process's client."""
    from tasks import runtime

    def install(*steps: object) -> ScriptedClient:
        client = ScriptedClient(*steps)

        async def factory() -> ScriptedClient:
            return client

        runtime.set_client_factory(factory)
        return client

    yield install
    runtime.set_client_factory(None)
