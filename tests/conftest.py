"""Shared fixtures: a real Redis (started when none answers), never a silent skip."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tasks.embedded import redis_server
from tasks.settings import Settings, forget, override

TEST_REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")

# The example projects' fixtures (sim, project, env, worker), for the tests/test_host_*.py.
pytest_plugins = ("host_support",)


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
