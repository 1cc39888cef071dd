"""Running the simulator: in the caller's event loop, or on its own loop in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from kraken.pay.simulator.app import make_app
from kraken.pay.simulator.faults import KINDS, WEBHOOK_KINDS, Faults, split_spec
from kraken.pay.simulator.pay import KrakenPay
from kraken.pay.simulator.site import CountingSite, url_of
from kraken.pay.simulator.state import Counters, PaymentRequest, canonical_external_id
from kraken.pay.simulator.webhooks import CallbackKeys, Notifier

JWKS_PATH = "/.well-known/pay-callback-keys.json"

__all__ = ["DEMO_API_KEY", "DEMO_API_SECRET", "Simulator", "SimulatorThread"]

# A key pair that exists only here: 64 random bytes, as Kraken's secrets are.
DEMO_API_KEY = "SlJULaQFkd4Y4yQoeO3hSWVpU0YTjB4lGgXLqqQLJIFH55EGmqlG3Jk7"
DEMO_API_SECRET = (
    "ZULQ0GlKfFmJd/EA4AfA3V4R0iypwE0JTX70afOir0OLBjM3zcEH6gt+LR4SjUkVWDY3geG3RfsDs0l1ELMuvQ=="
)

# Seconds a stopping server waits for calls in progress; delayed calls are woken at once.
_SHUTDOWN_TIMEOUT = 2.0

T = TypeVar("T")


class Simulator:
    """A local Kraken Pay server on a real socket; ``async with Simulator() as sim``.

    ``keys`` maps API keys to base64 secrets (default: the demo pair). ``nonce_window``
    mirrors the key setting of that name; ``rate_limit=(capacity, per_second)`` gives each
    key a token bucket; ``seed`` makes fault draws reproducible; ``latency=(low, high)``
    holds each answer that many seconds, as a real round trip to Kraken would; ``accept_form``
    also takes form bodies, as Kraken's classic endpoints do (for clients that send no JSON).
    Status notifications are signed with a key made here and tried ``webhook_attempts`` times
    per URL, ``webhook_backoff`` seconds apart at first, doubling.
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
        webhook_attempts: int = 5,
        webhook_backoff: float = 0.2,
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
        self._counters = Counters(
            faults_injected=dict.fromkeys(KINDS, 0),
            webhook_faults_injected=dict.fromkeys(WEBHOOK_KINDS, 0),
        )
        self._kraken = KrakenPay(
            {DEMO_API_KEY: DEMO_API_SECRET} if keys is None else keys,
            self._counters,
            nonce_window=nonce_window,
            rate_limit=rate_limit,
            accept_form=accept_form,
        )
        self._faults = Faults(seed)
        self._webhook_faults = Faults(seed, WEBHOOK_KINDS)
        self._notifier = Notifier(
            CallbackKeys(),
            self._webhook_faults,
            self._counters,
            attempts=webhook_attempts,
            backoff=webhook_backoff,
        )
        self._kraken.requests.on_change = self._notifier.notify
        self._runner: web.AppRunner | None = None
        self._site: CountingSite | None = None

    # -------------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        if self._site is None:
            raise RuntimeError("the simulator is not running: use `async with Simulator()`")
        return self._site.port

    @property
    def url(self) -> str:
        """The base URL to give a client, e.g. ``http://127.0.0.1:54321``."""
        return url_of(self.host, self.port)

    @property
    def jwks_url(self) -> str:
        """Where the simulator serves its callback keys: give it to ``PayCallbackVerifier``."""
        return self.url + JWKS_PATH

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
        site = CountingSite(runner, self.host, self._requested_port, self._count_connection)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        await self._notifier.start()
        self._runner, self._site = runner, site

    async def stop(self) -> None:
        runner, self._runner, self._site = self._runner, None, None
        if runner is not None:
            await runner.cleanup()
            await self._notifier.stop()

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
        return None if found is None else _described(eid, found)

    def summary(self) -> dict[str, Any]:
        """``{"total", "by_state": {state: n}, "cancel_calls": {"0": n, "1": n, ">1": n}}``."""
        return self._kraken.requests.summary()

    def cancelled_at(self) -> dict[str, float]:
        """``{external_id: unix time}`` of the moment each cancelled request was cancelled."""
        return self._kraken.requests.cancelled_at()

    def set_faults(self, spec: Mapping[str, Any]) -> None:
        """Replace the active faults, e.g. ``{"reset_before": {"next": 2}}``; webhook kinds too."""
        api, hooks = split_spec(spec)
        self._faults.set(api)
        self._webhook_faults.set(hooks)

    def clear_faults(self) -> None:
        self._faults.clear()
        self._webhook_faults.clear()

    def faults(self) -> dict[str, dict[str, Any]]:
        """The active faults, in the spec's shape, with ``next`` counting down."""
        return self._faults.describe() | self._webhook_faults.describe()

    # -------------------------------------------------------------------- notifications

    def jwks(self) -> dict[str, Any]:
        """The public keys notifications are signed with, as ``jwks_url`` serves them."""
        return self._notifier.keys.jwks()

    def register_webhook(self, url: str) -> list[str]:
        """Send every later state change to ``url`` too; returns the registered URLs."""
        return self._notifier.register(url)

    def webhooks(self) -> list[str]:
        return self._notifier.urls

    def clear_webhooks(self) -> None:
        """Forget the URLs; deliveries in flight are abandoned."""
        self._notifier.clear()

    def pay(self, external_id: Any, customer_kraktag: str | None = "sim-payer") -> dict[str, Any]:
        """The customer pays a pending request: a ``success`` notification follows."""
        eid = canonical_external_id(external_id)
        return _described(eid, self._kraken.requests.pay(eid, customer_kraktag))

    def expire(self, external_id: Any) -> dict[str, Any]:
        """A pending request expires: an ``expired`` notification follows."""
        eid = canonical_external_id(external_id)
        return _described(eid, self._kraken.requests.expire(eid))

    async def wait_webhooks(self, timeout: float = 30.0) -> None:
        """Return once every notification sent so far was acknowledged or given up."""
        await asyncio.wait_for(self._notifier.drain(), timeout)

    def stats(self) -> dict[str, Any]:
        return self._counters.as_dict()

    def reset(self) -> None:
        """Forget requests, nonces, rate budgets, faults, webhook URLs and counts; keys stay."""
        self._kraken.reset()
        self._faults.reset()
        self._webhook_faults.reset()
        self._notifier.clear()
        self._counters.reset()


def _described(eid: str, request: PaymentRequest) -> dict[str, Any]:
    return {"external_id": eid, "state": request.state, "cancel_calls": request.cancel_calls}


class SimulatorThread:
    """The same server on its own event loop in a daemon thread, for synchronous code.

    ``with SimulatorThread() as sim:`` returns once the port is bound, so other processes
    (Celery workers) can reach ``sim.url`` at once. Control methods run on the server's loop.
    """

    def __init__(
        self,
        keys: Mapping[str, str] | None = None,
        *,
        start_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        # Simulator's own options, one list (host, port, nonce_window, rate_limit, seed,
        # access_log, latency, accept_form, webhook_attempts, webhook_backoff).
        self._sim = Simulator(keys, **options)
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

    def jwks(self) -> dict[str, Any]:
        return self._sim.jwks()

    def register_webhook(self, url: str) -> list[str]:
        return self._on_loop(self._sim.register_webhook, url)

    def webhooks(self) -> list[str]:
        return self._on_loop(self._sim.webhooks)

    def clear_webhooks(self) -> None:
        self._on_loop(self._sim.clear_webhooks)

    def pay(self, external_id: Any, customer_kraktag: str | None = "sim-payer") -> dict[str, Any]:
        return self._on_loop(self._sim.pay, external_id, customer_kraktag)

    def expire(self, external_id: Any) -> dict[str, Any]:
        return self._on_loop(self._sim.expire, external_id)

    def wait_webhooks(self, timeout: float = 30.0) -> None:
        """Block until every notification sent so far was acknowledged or given up."""
        loop = self._loop
        if loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._sim.wait_webhooks(timeout), loop)
        future.result(timeout + 5)
