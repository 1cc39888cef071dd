"""HTTP routes: Kraken's private paths, where faults strike, and the ``/_sim/`` control paths.

The Kraken path is the hot one: no middleware, no logging, ready-made answers. Its body is
bounded first (size, time), then a fault is drawn, then Kraken's checks run. Control paths
are never subject to faults, keys or rate limits.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

from aiohttp import web

from kraken.pay.simulator.bodies import BodyTooLarge, SlowBody, read_body
from kraken.pay.simulator.control_routes import add_control_routes
from kraken.pay.simulator.faults import Fault, Faults
from kraken.pay.simulator.options import SimulatorOptions
from kraken.pay.simulator.pay import KrakenPay, answer
from kraken.pay.simulator.state import Counters
from kraken.pay.simulator.wire import (
    API_KEY_HEADER,
    API_SIGN_HEADER,
    INVALID_NONCE,
    LOCKOUT,
    PRIVATE_ROUTE,
    RATE_LIMIT_EXCEEDED,
    SERVICE_UNAVAILABLE,
)

if TYPE_CHECKING:
    from kraken.pay.simulator.server import Simulator

__all__ = ["make_app"]

_FaultHandler = Callable[[web.Request, Fault, bytes], Awaitable[web.Response]]

_ERROR_FAULTS = {
    "rate_limit": RATE_LIMIT_EXCEEDED,
    "service_unavailable": SERVICE_UNAVAILABLE,
    "invalid_nonce": INVALID_NONCE,
    "lockout": LOCKOUT,
}

# Cloudflare's own names for its 52x statuses, which http.HTTPStatus does not know.
_CLOUDFLARE_REASONS = {
    520: "Web Server Returned an Unknown Error",
    521: "Web Server Is Down",
    522: "Connection Timed Out",
    523: "Origin Is Unreachable",
    524: "A Timeout Occurred",
}

_LINGER_ZERO = struct.pack("ii", 1, 0)


def make_app(
    kraken: KrakenPay,
    faults: Faults,
    counters: Counters,
    *,
    controls: Simulator,
    options: SimulatorOptions,
) -> web.Application:
    """The whole server: ``kraken`` answers, ``faults`` interfere, ``controls`` serve /_sim/.

    Each route reads its body within its own limit; the application's ``client_max_size``
    is only a backstop at the largest of them.
    """
    app = web.Application(client_max_size=max(options.max_api_body, options.max_control_body))
    routes = _KrakenRoutes(kraken, faults, counters, options)
    app.router.add_post(PRIVATE_ROUTE, routes.handle)
    add_control_routes(app, controls, counters, options)
    app.on_shutdown.append(routes.on_shutdown)
    return app


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def _reset_connection(request: web.BaseRequest) -> web.Response:
    """Drop the connection with a TCP RST, as a crashed proxy would; nothing is answered."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        transport.abort()
    return web.Response()  # aiohttp drops it quietly: the transport is closed


def _close(request: web.BaseRequest) -> web.Response:
    """Close the connection without an answer (and without lingering over its body)."""
    request.protocol.force_close()
    return web.Response()  # aiohttp drops it quietly: the transport is closed


def _cloudflare_page(status: int) -> web.Response:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = _CLOUDFLARE_REASONS.get(status, "Server Error")
    page = (
        f"<html>\n<head><title>{status} {reason}</title></head>\n<body>\n"
        f"<center><h1>{status} {reason}</h1></center>\n"
        "<hr><center>cloudflare</center>\n</body>\n</html>\n"
    )
    response = web.Response(
        text=page,
        status=status,
        reason=reason,
        content_type="text/html",
        headers={"Server": "cloudflare"},
    )
    if status == 413:
        response.force_close()  # the rest of the body is not worth a kept-alive connection
    return response


class _KrakenRoutes:
    """``POST /0/...``: bound the body, draw a fault, then answer as Kraken would or fail."""

    def __init__(
        self, kraken: KrakenPay, faults: Faults, counters: Counters, options: SimulatorOptions
    ) -> None:
        self._kraken = kraken
        self._latency = options.latency
        self._max_body = options.max_api_body
        self._body_timeout = options.body_timeout
        self._faults = faults
        self._counters = counters
        self._stopping = asyncio.Event()
        self._on_fault: dict[str, _FaultHandler] = {
            "reset_before": self._reset_before,
            "reset_after": self._reset_after,
            "delay": self._delay,
            "http_5xx": self._http_5xx,
            "malformed_json": self._malformed_json,
        } | dict.fromkeys(_ERROR_FAULTS, self._kraken_error)

    async def handle(self, request: web.Request) -> web.Response:
        self._counters.requests += 1
        # Read before the fault: once a client gives up (delay), its body can no longer be
        # read, yet the call must still take effect (aiohttp does not cancel on disconnect).
        try:
            body = await read_body(request, self._max_body, self._body_timeout)
        except BodyTooLarge:
            self._counters.bodies_too_large += 1
            return _cloudflare_page(413)  # Kraken's proxy refuses it before Kraken sees it
        except SlowBody:
            self._counters.slow_requests += 1
            return _close(request)
        fault = self._faults.draw()
        if fault is None:
            answer_body = self._process(request, body)
            if self._latency is not None:
                await asyncio.sleep(random.uniform(*self._latency))
            return _json(answer_body)
        injected = self._counters.faults_injected
        injected[fault.kind] = injected.get(fault.kind, 0) + 1
        return await self._on_fault[fault.kind](request, fault, body)

    async def on_shutdown(self, app: web.Application) -> None:
        """Wake delayed calls, so a stopping server does not wait out their delay."""
        self._stopping.set()

    def _process(self, request: web.Request, body: bytes) -> bytes:
        headers = request.headers
        return self._kraken.call(
            request.path, headers.get(API_KEY_HEADER), headers.get(API_SIGN_HEADER), body
        )

    async def _reset_before(self, request: web.Request, fault: Fault, body: bytes) -> web.Response:
        return _reset_connection(request)

    async def _reset_after(self, request: web.Request, fault: Fault, body: bytes) -> web.Response:
        self._process(request, body)
        return _reset_connection(request)

    async def _delay(self, request: web.Request, fault: Fault, body: bytes) -> web.Response:
        try:
            await asyncio.wait_for(self._stopping.wait(), fault.seconds)
        except asyncio.TimeoutError:
            return _json(self._process(request, body))
        return _reset_connection(request)  # shutting down: the call never arrived

    async def _http_5xx(self, request: web.Request, fault: Fault, body: bytes) -> web.Response:
        return _cloudflare_page(fault.status)

    async def _malformed_json(
        self, request: web.Request, fault: Fault, body: bytes
    ) -> web.Response:
        answer_body = self._process(request, body)
        return _json(answer_body[: len(answer_body) // 2])

    async def _kraken_error(self, request: web.Request, fault: Fault, body: bytes) -> web.Response:
        return _json(answer(_ERROR_FAULTS[fault.kind]))
