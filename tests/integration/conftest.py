"""The integration tests' fixtures: real Redis, the simulator in a thread, real workers.

Everything collected below this folder is marked ``slow`` (``make test-fast`` leaves it out),
so that no test here can forget the mark. The Redis is the one at ``REDIS_URL`` (default
``redis://127.0.0.1:6379/15``); where none answers, the suite starts its own, and never skips
for want of one. Module-scoped fixtures are per test module: each module has its own queue, its
own simulator and its own worker, so that no module sees another's messages or counts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from celery import Celery
from tasks_support import (
    BROKER_DB,
    TASKS_DB,
    Worker,
    client_app,
    unique,
    worker_env,
    workers,
)

from kraken.pay.simulator import SimulatorThread
from kraken_pay_cli.local import databases, redis_db, redis_server
from tasks.settings import DEFAULT_REDIS_URL

HERE = Path(__file__).parent
TEST_REDIS_URL = os.environ.get("REDIS_URL") or redis_db(DEFAULT_REDIS_URL, databases.TEST_DEFAULT)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of this tree is slow; the hook sees the whole session, so filter."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.slow)


def _module_name(request: pytest.FixtureRequest) -> str:
    return request.module.__name__.removeprefix("test_")


# ----------------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server's URL: ``REDIS_URL``'s, or one started for the session."""
    with redis_server(TEST_REDIS_URL) as url:
        yield url


@pytest.fixture
def redis_sync(redis_url: str) -> Iterator[redis.Redis]:
    """A client of ``redis_url``'s database, flushed before the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
async def redis_async(
    redis_url: str, redis_sync: redis.Redis
) -> AsyncIterator[redis.asyncio.Redis]:
    """An asyncio client of the same flushed database."""
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def broker_url(redis_url: str) -> str:
    """Celery's broker and result backend: a database of its own, never flushed by a test."""
    return redis_db(redis_url, BROKER_DB)


@pytest.fixture(scope="session")
def tasks_redis_url(redis_url: str) -> str:
    """The workers' ``REDIS_URL``: their nonces, ordering locks, rate budget and ledger."""
    return redis_db(redis_url, TASKS_DB)


# ----------------------------------------------------------------------------- the simulator


@pytest.fixture(scope="module")
def sim_options() -> dict[str, Any]:
    """The simulator's options; a module overrides this fixture to change them."""
    return {"seed": 7}


@pytest.fixture(scope="module")
def sim(sim_options: dict[str, Any]) -> Iterator[SimulatorThread]:
    """The module's simulator, serving the demo key; faults are cleared around each test."""
    with SimulatorThread(**sim_options) as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    if "sim" not in request.fixturenames:
        yield
        return
    simulator = request.getfixturevalue("sim")
    simulator.clear_faults()
    yield
    simulator.clear_faults()


# ----------------------------------------------------------------------------- Celery


@pytest.fixture(scope="module")
def queue(request: pytest.FixtureRequest) -> str:
    """The module's own queue: its workers consume nothing another module sends."""
    return unique(f"q-{_module_name(request)}")


@pytest.fixture(scope="module")
def client(broker_url: str, queue: str) -> Iterator[Celery]:
    """This process's ``tasks`` app, publishing to the test broker; the module's queue is its
    default queue and the library's."""
    from tasks.celery import app

    with client_app(
        app, broker_url=broker_url, result_backend=broker_url, task_default_queue=queue
    ) as configured:
        yield configured


@pytest.fixture(scope="module")
def log_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the module's workers write their logs."""
    return tmp_path_factory.mktemp(f"{_module_name(request)}-logs")


@pytest.fixture(scope="module")
def environment(sim: SimulatorThread, tasks_redis_url: str, broker_url: str) -> dict[str, str]:
    """A worker's environment: the simulator as Kraken, the test broker, quick retries; a
    module overrides it (asking for ``environment`` itself) to add its own settings."""
    return worker_env(sim_url=sim.url, redis_url=tasks_redis_url, broker_url=broker_url)


@contextlib.contextmanager
def _ready(env: Mapping[str, str], queue: str, log_dir: Path, app: Celery, **options: Any):
    with workers(Worker(env, queue, log_dir, **options)) as (node,):
        node.wait_ready(app)
        yield node


@pytest.fixture(scope="module")
def worker_options() -> dict[str, Any]:
    """The pool of the module's worker; a module overrides this fixture to change it."""
    return {"pool": "prefork", "concurrency": 2}


@pytest.fixture(scope="module")
def worker(
    environment: dict[str, str],
    worker_options: dict[str, Any],
    queue: str,
    client: Celery,
    log_dir: Path,
) -> Iterator[Worker]:
    """The module's worker node on the module's queue, ready once it has run a task."""
    with _ready(environment, queue, log_dir, client, **worker_options) as node:
        yield node


@pytest.fixture
def running_worker(
    client: Celery, queue: str, log_dir: Path
) -> Callable[..., contextlib.AbstractContextManager[Worker]]:
    """``with running_worker(env, queue=..., pool=..., concurrency=...) as node``: a node of
    the test's own (on the module's queue unless told), ready once it has run a task."""

    def start(env: Mapping[str, str], *, queue: str = queue, **options: Any):
        return _ready(env, queue, log_dir, client, **options)

    return start
