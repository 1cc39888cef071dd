"""The unit tests' fixtures: fakes and the simulator on the test's own event loop.

Nothing here needs a service or another process: no real Redis (``fakeredis`` stands in), no
worker, no subprocess (but the one fresh interpreter of test_public_names.py). A test that
needs one belongs in tests/integration/, where it is marked slow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import fakeredis
import pytest
from fake_client import ScriptedClient

from kraken.pay import Credentials, KrakenPayClient
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, Simulator

CREDENTIALS = Credentials(DEMO_API_KEY, DEMO_API_SECRET)


@pytest.fixture
def sim_options() -> dict[str, Any]:
    """The simulator's options; a module overrides this fixture to change them."""
    return {"seed": 7}


@pytest.fixture
async def sim(sim_options: dict[str, Any]) -> AsyncIterator[Simulator]:
    """A fresh simulator for each test, on the test's loop, serving the demo key."""
    async with Simulator(**sim_options) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[KrakenPayClient]:
    """A client of ``sim`` with the demo key."""
    async with KrakenPayClient(CREDENTIALS, base_url=sim.url, timeout=5.0) as kraken:
        yield kraken


@pytest.fixture
async def fake_redis() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


@pytest.fixture
def client_factory() -> Iterator[Callable[[Callable[[], Any]], None]]:
    """``client_factory(factory)``: the tasks' runtime builds its client with ``factory`` (an
    async callable) for this test; production's factory again after it."""
    from tasks import runtime

    yield runtime.set_client_factory
    runtime.set_client_factory(None)


@pytest.fixture
def scripted(client_factory) -> Callable[..., ScriptedClient]:
    """``scripted(*steps, script=..., latency=...)``: a ScriptedClient is the process's client."""

    def install(*steps: object, **options: Any) -> ScriptedClient:
        client = ScriptedClient(*steps, **options)

        async def factory() -> ScriptedClient:
            return client

        client_factory(factory)
        return client

    return install
