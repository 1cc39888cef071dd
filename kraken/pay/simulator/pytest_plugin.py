"""pytest fixtures for your own tests: a Kraken Pay simulator that starts clean in every test.

Installed with the package (entry point ``pytest11``: ``kraken_pay_simulator``), nothing to
configure::

    async def test_cancel(kraken_pay_simulator):       # asyncio, with pytest-asyncio
        kraken_pay_simulator.create_requests([eid])
        ...  # KrakenPayClient(credentials, base_url=kraken_pay_simulator.url)

    def test_worker(kraken_pay_simulator_thread):      # sync code, Celery workers elsewhere
        kraken_pay_simulator_thread.set_faults({"http_5xx": {"next": 1}})

``kraken_pay_simulator`` is a ``Simulator`` started on the loop of your asyncio fixtures
(``asyncio_default_fixture_loop_scope``), one per test. ``kraken_pay_simulator_thread`` is a
``SimulatorThread`` started once per session and reset before each test: payment requests,
nonces, faults, webhook URLs and counters are forgotten, its URL stays. Both accept the demo
key pair (``DEMO_API_KEY``, ``DEMO_API_SECRET``); override the session fixture
``kraken_pay_simulator_options`` in a ``conftest.py`` to change keys, limits or faults' seed.
Disable the plugin with ``-p no:kraken_pay_simulator``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

try:
    import pytest_asyncio
except ImportError:  # the thread fixture still works; the async one says what is missing
    pytest_asyncio = None

if TYPE_CHECKING:
    from kraken.pay.simulator import Simulator, SimulatorOptions, SimulatorThread

__all__ = [
    "kraken_pay_simulator",
    "kraken_pay_simulator_options",
    "kraken_pay_simulator_thread",
]


@pytest.fixture(scope="session")
def kraken_pay_simulator_options() -> SimulatorOptions:
    """The options both fixtures build their simulator from; override it to change them."""
    from kraken.pay.simulator import SimulatorOptions

    return SimulatorOptions()


@pytest.fixture(scope="session")
def _kraken_pay_simulator_server(
    kraken_pay_simulator_options: SimulatorOptions,
) -> Iterator[SimulatorThread]:
    from kraken.pay.simulator import SimulatorThread

    with SimulatorThread(options=kraken_pay_simulator_options) as sim:
        yield sim


@pytest.fixture
def kraken_pay_simulator_thread(
    _kraken_pay_simulator_server: SimulatorThread,
) -> SimulatorThread:
    """The session's ``SimulatorThread``, reset: no request, fault, webhook URL or count left."""
    _kraken_pay_simulator_server.reset()
    return _kraken_pay_simulator_server


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def kraken_pay_simulator(
        kraken_pay_simulator_options: SimulatorOptions,
    ) -> AsyncIterator[Simulator]:
        """A ``Simulator`` of its own for this test, running on the test's event loop."""
        from kraken.pay.simulator import Simulator

        async with Simulator(options=kraken_pay_simulator_options) as sim:
            yield sim

else:

    @pytest.fixture
    def kraken_pay_simulator() -> None:
        """Needs pytest-asyncio: the simulator runs on the test's event loop."""
        pytest.fail(
            "kraken_pay_simulator is an asyncio fixture: pip install pytest-asyncio "
            "(or use kraken_pay_simulator_thread)",
            pytrace=False,
        )
