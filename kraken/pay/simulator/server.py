"""The simulator in the caller's event loop: ``async with Simulator() as sim``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from kraken.pay.simulator.app import make_app
from kraken.pay.simulator.controls import implements_controls
from kraken.pay.simulator.faults import KINDS, WEBHOOK_KINDS, Faults, split_spec
from kraken.pay.simulator.options import DEMO_API_KEY, DEMO_API_SECRET, SimulatorOptions
from kraken.pay.simulator.pay import KrakenPay
from kraken.pay.simulator.site import CountingSite, url_of
from kraken.pay.simulator.state import Counters, PaymentRequest, canonical_external_id
from kraken.pay.simulator.webhooks import CallbackKeys, Notifier
from kraken.pay.simulator.wire import JWKS_PATH

__all__ = ["DEMO_API_KEY", "DEMO_API_SECRET", "JWKS_PATH", "Simulator"]

# Seconds a stopping server waits for calls in progress; delayed calls are woken at once.
_SHUTDOWN_TIMEOUT = 2.0
# Seconds a refused body is still read (and dropped) so the client can read the refusal
# before the connection closes; aiohttp's default is 10.
_LINGERING_TIME = 1.0


class _OneLineForBadRequests(logging.Filter):
    """A malformed request head is the client's doing: one INFO line, never a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = (str(exc.message).splitlines() or [""])[0]
            record.msg, record.args = f"{record.getMessage()}: {exc.code} {reason}", ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _server_logger() -> logging.Logger:
    """aiohttp's server logger for the simulator, with bad requests kept to one line."""
    logger = logging.getLogger("kraken.pay.simulator.server")
    if not any(isinstance(f, _OneLineForBadRequests) for f in logger.filters):
        logger.addFilter(_OneLineForBadRequests())
    return logger


@implements_controls
class Simulator:
    """A local Kraken Pay server on a real socket; ``async with Simulator() as sim``.

    Built from :class:`~kraken.pay.simulator.options.SimulatorOptions`, given whole
    (``Simulator(options=opts)``) or as its fields (``Simulator(keys, nonce_window=10)``), or
    both (the fields replace those of ``options``). Its controls are those of
    :class:`~kraken.pay.simulator.controls.SimulatorControls`; ``wait_webhooks`` is awaited.
    """

    def __init__(
        self,
        keys: Mapping[str, str] | None = None,
        *,
        options: SimulatorOptions | None = None,
        **settings: Any,
    ) -> None:
        self.options = options = SimulatorOptions.of(keys, options, **settings)
        self.host = options.host
        self._counters = Counters(
            faults_injected=dict.fromkeys(KINDS, 0),
            webhook_faults_injected=dict.fromkeys(WEBHOOK_KINDS, 0),
        )
        self._kraken = KrakenPay(
            options.keys,  # type: ignore[arg-type]  # always a mapping once built
            self._counters,
            nonce_window=options.nonce_window,
            rate_limit=options.rate_limit,
            accept_form=options.accept_form,
            max_json_depth=options.max_json_depth,
        )
        self._faults = Faults(options.seed)
        self._webhook_faults = Faults(options.seed, WEBHOOK_KINDS)
        self._notifier = Notifier(
            CallbackKeys(),
            self._webhook_faults,
            self._counters,
            attempts=options.webhook_attempts,
            backoff=options.webhook_backoff,
        )
        self._register_configured_webhooks()
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
        options = self.options
        app = make_app(self._kraken, self._faults, self._counters, controls=self, options=options)
        runner = web.AppRunner(
            app,
            access_log=web.access_logger if options.access_log else None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
            handler_cancellation=False,  # a call whose client left still takes effect
            keepalive_timeout=options.keepalive_timeout,
            lingering_time=_LINGERING_TIME,
            logger=_server_logger(),
        )
        await runner.setup()
        site = CountingSite(
            runner,
            self.host,
            options.port,
            self._count_connection,
            header_timeout=options.header_timeout,
            on_slow=self._count_slow_request,
        )
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

    def _count_slow_request(self) -> None:
        self._counters.slow_requests += 1

    def _register_configured_webhooks(self) -> None:
        for url in self.options.webhooks:
            self._notifier.register(url)

    # -------------------------------------------------------------------- controls
    # Docstrings of the controls: kraken.pay.simulator.controls.SimulatorControls.

    def create_requests(self, ids: Iterable[Any], state: str = "pending") -> int:
        return self._kraken.requests.create(ids, state)

    def request(self, external_id: Any) -> dict[str, Any] | None:
        eid = canonical_external_id(external_id)
        found = self._kraken.requests.get(eid)
        return None if found is None else _described(eid, found)

    def summary(self) -> dict[str, Any]:
        return self._kraken.requests.summary()

    def cancelled_at(self) -> dict[str, float]:
        return self._kraken.requests.cancelled_at()

    def pay(self, external_id: Any, customer_kraktag: str | None = "sim-payer") -> dict[str, Any]:
        eid = canonical_external_id(external_id)
        return _described(eid, self._kraken.requests.pay(eid, customer_kraktag))

    def expire(self, external_id: Any) -> dict[str, Any]:
        eid = canonical_external_id(external_id)
        return _described(eid, self._kraken.requests.expire(eid))

    def set_faults(self, spec: Mapping[str, Any]) -> None:
        api, hooks = split_spec(spec)
        self._faults.set(api)
        self._webhook_faults.set(hooks)

    def clear_faults(self) -> None:
        self._faults.clear()
        self._webhook_faults.clear()

    def faults(self) -> dict[str, dict[str, Any]]:
        return self._faults.describe() | self._webhook_faults.describe()

    def jwks(self) -> dict[str, Any]:
        return self._notifier.keys.jwks()

    def register_webhook(self, url: str) -> list[str]:
        return self._notifier.register(url)

    def webhooks(self) -> list[str]:
        return self._notifier.urls

    def clear_webhooks(self) -> None:
        self._notifier.clear()

    async def wait_webhooks(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self._notifier.drain(), timeout)

    def stats(self) -> dict[str, Any]:
        return self._counters.as_dict()

    def reset(self) -> None:
        self._kraken.reset()
        self._faults.reset()
        self._webhook_faults.reset()
        self._notifier.clear()
        self._register_configured_webhooks()
        self._counters.reset()


def _described(eid: str, request: PaymentRequest) -> dict[str, Any]:
    return {"external_id": eid, "state": request.state, "cancel_calls": request.cancel_calls}
