"""Running the simulator: in the caller's event loop, or on its own loop in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from kraken.pay.simulator.app import make_app
from kraken.pay.simulator.faults import KINDS, Faults
from kraken.pay.simulator.pay import KrakenPay
from kraken.pay.simulator.state import Counters, canonical_external_id

__all__ = ["DEMO_API_KEY", "DEMO_API_SECRET", "Simulator", "SimulatorThread"]

# A key pair that exists only here: 64 random bytes, as Kraken's secrets are.
DEMO_API_KEY = "SlJULaQFkd4Y4yQoeO3hSWVpU0YTjB4lGgXLqqQLJIFH55EGmqlG3Jk7"
DEMO_API_SECRET = (
    "ZULQ0GlKfFmJd/EA4AfA3V4R0iypwE0JTX70afOir0OLBjM3zcEH6gt+LR4SjUkVWDY3geG3RfsDs0l1ELMuvQ=="
)

# Seconds a stopping server waits for calls in progress; delayed calls are woken at once.
_SHUTDOWN_TIMEOUT = 2.0
_BACKLOG = 1024  # benchmarks open hundreds of connections at once

T = TypeVar("T")


class _CountingSite(web.BaseSite):
    """A TCP site that counts accepted connections, which no per-request hook can see."""

    __slots__ = ("_host", "_on_connection", "_port")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, on_connection: Callable[[], None]
    ) -> None:
        super().__init__(runner, backlog=_BACKLOG)
        self._host = host
        self._port = port
        self._on_connection = on_connection

    @property
    def name(self) -> str:
        return _url(self._host, self.port)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        await super().start()
        make_protocol = self._runner.server
        assert make_protocol is not None
        on_connection = self._on_connection

        def protocol() -> asyncio.Protocol:
            on_connection()
            return make_protocol()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self._backlog
        )


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Simulator:
    """A local Kraken Pay server on a real socket; ``async with Simulator() as sim``.

    ``keys`` maps API keys to base64 secrets (default: the demo pair). ``nonce_window``
    mirrors the key setting of that name; ``rate_limit=(capacity, per_second)`` gives each
    key a token bucket; ``seed`` makes fault draws reproducible; ``latency=(low, high)``
    holds each answer that many seconds, as a real round trip to Kraken would; ``accept_form``
    also takes form bodies, as Kraken's classic endpoints do (for clients that send no JSON).
    """

    def __init__(
        self,
        keys: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        nonce_window: int = 0,
        rate_limit: tuple[float, float] | None = None,
        seed: int | None = None,
        access_log: bool = False,
        latency: tuple[float, float] | None = None,
        accept_form: bool = False,
    ) -> None:
        if latency is not None and not 0 <= latency[0] <= latency[1] <= 60:
            raise ValueError(
                f"latency: must be (low, high) seconds, 0 <= low <= high <= 60, not {latency!r}"
            )
        self._latency = latency
        self.host = host
        self._requested_port = port
        self._access_log = access_log
        self._counters = Counters(faults_injected=dict.fromkeys(KINDS, 0))
        self._kraken = KrakenPay(
            {DEMO_API_KEY: DEMO_API_SECRET} if keys is None else keys,
            self._counters,
            nonce_window=nonce_window,
            rate_limit=rate_limit,
            accept_form=accept_form,
        )
        self._faults = Faults(seed)
        self._runner: web.AppRunner | None = None
        self._site: _CountingSite | None = None

    # -------------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        if self._site is None:
            raise RuntimeError("the simulator is not running: use `async with Simulator()`")
        return self._site.port

    @property
    def url(self) -> str:
        """The base URL to give a client, e.g. ``http://127.0.0.1:54321``."""
        return _url(self.host, self.port)

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        app = make_app(
            self._kraken, self._faults, self._counters, controls=self, latency=self._latency
        )
        runner = web.AppRunner(
            app,
            access_log=web.access_logger if self._access_log else None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
            handler_cancellation=False,  # a call whose client left still takes effect
        )
        await runner.setup()
        site = _CountingSite(runner, self.host, self._requested_port, self._count_connection)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._site = runner, site

    async def stop(self) -> None:
        runner, self._runner, self._site = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _count_connection(self) -> None:
        self._counters.connections_opened += 1

    # -------------------------------------------------------------------- control

    def create_requests(self, ids: Iterable[Any], state: str = "pending") -> int:
        """Create (or replace) payment requests; ids are canonical strings, UUIDs, ints or bytes."""
        return self._kraken.requests.create(ids, state)

    def request(self, external_id: Any) -> dict[str, Any] | None:
        """``{"external_id", "state", "cancel_calls"}`` of one payment request, or ``None``."""
        eid = canonical_external_id(external_id)
        found = self._kraken.requests.get(eid)
        if found is None:
            return None
        return {"external_id": eid, "state": found.state, "cancel_calls": found.cancel_calls}

    def summary(self) -> dict[str, Any]:
        """``{"total", "by_state": {state: n}, "cancel_calls": {"0": n, "1": n, ">1": n}}``."""
        return self._kraken.requests.summary()

    def cancelled_at(self) -> dict[str, float]:
        """``{external_id: unix time}`` of the moment each cancelled request was cancelled."""
        return self._kraken.requests.cancelled_at()

    def set_faults(self, spec: Mapping[str, Any]) -> None:
        """Replace the active faults, e.g. ``{"reset_before": {"next": 2}}``."""
        self._faults.set(spec)

    def clear_faults(self) -> None:
        self._faults.clear()

    def faults(self) -> dict[str, dict[str, Any]]:
        """The active faults, in the spec's shape, with ``next`` counting down."""
        return self._faults.describe()

    def stats(self) -> dict[str, Any]:
        return self._counters.as_dict()

    def reset(self) -> None:
        """Forget requests, nonces, rate budgets, faults and counts; keys and options stay."""
        self._kraken.reset()
        self._faults.reset()
        self._counters.reset()


class SimulatorThread:
    """The same server on its own event loop in a daemon thread, for synchronous code.

    ``with SimulatorThread() as sim:`` returns once the port is bound, so other processes
    (Celery workers) can reach ``sim.url`` at once. Control methods run on the server's loop.
    """

    def __init__(
        self,
        keys: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        nonce_window: int = 0,
        rate_limit: tuple[float, float] | None = None,
        seed: int | None = None,
        access_log: bool = False,
        start_timeout: float = 30.0,
    ) -> None:
        self._sim = Simulator(
            keys,
            host=host,
            port=port,
            nonce_window=nonce_window,
            rate_limit=rate_limit,
            seed=seed,
            access_log=access_log,
        )
        self._start_timeout = start_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self._sim.port

    @property
    def url(self) -> str:
        return self._sim.url

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

    def _on_loop(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function`` on the server's loop, where the state lives; directly if stopped."""
        loop = self._loop
        if loop is None:
            return function(*args)

        async def call() -> T:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30)

    # The control methods of Simulator, safe to call from any thread.

    def create_requests(self, ids: Iterable[Any], state: str = "pending") -> int:
        return self._on_loop(self._sim.create_requests, ids, state)

    def request(self, external_id: Any) -> dict[str, Any] | None:
        return self._on_loop(self._sim.request, external_id)

    def summary(self) -> dict[str, Any]:
        return self._on_loop(self._sim.summary)

    def cancelled_at(self) -> dict[str, float]:
        return self._on_loop(self._sim.cancelled_at)

    def set_faults(self, spec: Mapping[str, Any]) -> None:
        self._on_loop(self._sim.set_faults, spec)

    def clear_faults(self) -> None:
        self._on_loop(self._sim.clear_faults)

    def faults(self) -> dict[str, dict[str, Any]]:
        return self._on_loop(self._sim.faults)

    def stats(self) -> dict[str, Any]:
        return self._on_loop(self._sim.stats)

    def reset(self) -> None:
        self._on_loop(self._sim.reset)
