"""A local Kraken Pay server for tests, the demo, benchmarks and users' own tests.

``async with Simulator() as sim`` in async code, ``with SimulatorThread() as sim`` in
synchronous code, ``python -m kraken.pay.simulator`` from a shell; ``sim.url`` is the base URL
to give a client, and the demo key pair is accepted unless other keys are given.
"""

from kraken.pay.simulator.cli import serve
from kraken.pay.simulator.faults import KINDS as FAULT_KINDS
from kraken.pay.simulator.faults import FaultSpecError
from kraken.pay.simulator.server import DEMO_API_KEY, DEMO_API_SECRET, Simulator, SimulatorThread

__all__ = [
    "DEMO_API_KEY",
    "DEMO_API_SECRET",
    "FAULT_KINDS",
    "FaultSpecError",
    "Simulator",
    "SimulatorThread",
    "serve",
]
