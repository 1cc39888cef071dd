"""The simulator on its own event loop in a daemon thread: ``with SimulatorThread() as sim``."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from kraken.pay.simulator.controls import implements_controls
from kraken.pay.simulator.options import SimulatorOptions
from kraken.pay.simulator.server import Simulator

__all__ = ["SimulatorThread"]

P = ParamSpec("P")
R = TypeVar("R")

_CALL_TIMEOUT = 30.0  # seconds a control may take on the server's loop


def _forward(
    control: Callable[Concatenate[Simulator, P], R],
) -> Callable[Concatenate[SimulatorThread, P], R]:
    """The thread's form of a ``Simulator`` control: same signature, run on the server's loop."""

    @functools.wraps(control)
    def forwarder(self: SimulatorThread, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._on_loop(functools.partial(control, self._sim, *args, **kwargs))

    return forwarder


@implements_controls
class SimulatorThread:
    """The same server on its own event loop in a daemon thread, for synchronous code.

    ``with SimulatorThread() as sim:`` returns once the port is bound, so other processes
    (Celery workers) can reach ``sim.url`` at once. Takes what ``Simulator`` takes, and
    ``start_timeout``; control methods run on the server's loop, from any thread.
    """

    def __init__(
        self,
        keys: Mapping[str, str] | None = None,
        *,
        options: SimulatorOptions | None = None,
        start_timeout: float = 30.0,
        **settings: Any,
    ) -> None:
        self._sim = Simulator(keys, options=options, **settings)
        self._start_timeout = start_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def options(self) -> SimulatorOptions:
        return self._sim.options

    @property
    def port(self) -> int:
        return self._sim.port

    @property
    def url(self) -> str:
        return self._sim.url

    @property
    def jwks_url(self) -> str:
        return self._sim.jwks_url

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the simulator thread is already running")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="kraken-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise RuntimeError(f"the simulator did not start within {self._start_timeout}s")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"the simulator thread did not stop within {timeout}s")
        self._thread = self._loop = self._stopping = None

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            await self._sim.start()
        except BaseException as exc:  # reported to start() in the caller's thread
            self._error = exc
            self._ready.set()
            return
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self._sim.stop()

    def _on_loop(self, call: Callable[[], R]) -> R:
        """Run ``call`` on the server's loop, where the state lives; directly if stopped."""
        loop = self._loop
        if loop is None:
            return call()

        async def on_loop() -> R:
            return call()

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout=_CALL_TIMEOUT)

    # -------------------------------------------------------------------- controls

    create_requests = _forward(Simulator.create_requests)
    request = _forward(Simulator.request)
    summary = _forward(Simulator.summary)
    cancelled_at = _forward(Simulator.cancelled_at)
    pay = _forward(Simulator.pay)
    expire = _forward(Simulator.expire)
    set_faults = _forward(Simulator.set_faults)
    clear_faults = _forward(Simulator.clear_faults)
    faults = _forward(Simulator.faults)
    jwks = _forward(Simulator.jwks)
    register_webhook = _forward(Simulator.register_webhook)
    webhooks = _forward(Simulator.webhooks)
    clear_webhooks = _forward(Simulator.clear_webhooks)
    stats = _forward(Simulator.stats)
    reset = _forward(Simulator.reset)

    def wait_webhooks(self, timeout: float = 30.0) -> None:
        """Block until every notification sent so far was acknowledged or given up."""
        loop = self._loop
        if loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._sim.wait_webhooks(timeout), loop)
        future.result(timeout + 5)
