"""A local Kraken Pay server for tests, the demo, benchmarks and users' own tests.

``async with Simulator() as sim`` in async code, ``with SimulatorThread() as sim`` in
synchronous code, ``python -m kraken.pay.simulator`` from a shell, and ``SimulatorClient(url)``
to control one running in another process; ``sim.url`` is the base URL to give a client, and
the demo key pair is accepted unless other keys are given. The pytest fixtures
``kraken_pay_simulator`` and ``kraken_pay_simulator_thread`` come with the package.
Options: ``SimulatorOptions``; controls: ``SimulatorControls``; all of it: docs/simulator.md.
"""

from kraken.pay.simulator.cli import run, serve
from kraken.pay.simulator.client import ControlRefused, SimulatorClient
from kraken.pay.simulator.controls import SimulatorControls
from kraken.pay.simulator.faults import KINDS as FAULT_KINDS
from kraken.pay.simulator.faults import FaultSpecError
from kraken.pay.simulator.options import DEMO_API_KEY, DEMO_API_SECRET, SimulatorOptions
from kraken.pay.simulator.server import Simulator
from kraken.pay.simulator.thread import SimulatorThread

__all__ = [
    "DEMO_API_KEY",
    "DEMO_API_SECRET",
    "FAULT_KINDS",
    "ControlRefused",
    "FaultSpecError",
    "Simulator",
    "SimulatorClient",
    "SimulatorControls",
    "SimulatorOptions",
    "SimulatorThread",
    "run",
    "serve",
]
