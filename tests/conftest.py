"""Fixtures of the whole suite: the library's settings, the test process's ledger, an HTTP
session.

The unit tests' fixtures are in tests/unit/conftest.py (fakes, the simulator on the test's
loop); the integration tests' in tests/integration/conftest.py (a real Redis, started where
none answers, the simulator in a thread, real workers). No test skips for want of a service
the suite can start itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import fakeredis
import pytest

from tasks.ledger import Ledger
from tasks.ledger import override as override_ledger
from tasks.settings import Settings, forget, override


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
def ledger() -> Iterator[Ledger]:
    """The test process's ledger (what ``delay`` records) lives in fakeredis; workers keep
    theirs in the real Redis their environment names. A test that needs the test process's
    entries in a real Redis overrides it again."""
    from tasks.celery import app

    ledger = Ledger(fakeredis.FakeRedis(), "kraken")
    override_ledger(app, ledger)
    yield ledger
    override_ledger(app, None)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP session, to send requests crafted by hand."""
    async with aiohttp.ClientSession() as session:
        yield session
