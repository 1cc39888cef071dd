"""HTTP routes: Kraken's private paths, where faults strike, and the ``/_sim/`` control paths.

The Kraken path is the hot one: no middleware, no logging, ready-made answers. Control paths
are never subject to faults, keys or rate limits.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kraken.pay.simulator.faults import Fault, Faults
from kraken.pay.simulator.pay import (
    INVALID_NONCE,
    LOCKOUT,
    RATE_LIMIT_EXCEEDED,
    SERVICE_UNAVAILABLE,
    KrakenPay,
    answer,
)
from kraken.pay.simulator.state import Counters, TransitionError, canonical_external_id

if TYPE_CHECKING:
    from kraken.pay.simulator.server import Simulator

__all__ = ["make_app"]

MAX_CONTROL_BODY = 64 * 2**20  # bulk creation of a hundred thousand ids fits

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
    latency: tuple[float, float] | None = None,
) -> web.Application:
    """The whole server: ``kraken`` answers, ``faults`` interfere, ``controls`` serve /_sim/.

    ``latency=(low, high)`` holds each answer of a Kraken path that many seconds (uniform), as
    the real Kraken's round trip would; the call has taken effect by then.
    """
    app = web.Application(client_max_size=MAX_CONTROL_BODY)
    routes = _KrakenRoutes(kraken, faults, counters, latency)
    control = _ControlRoutes(controls)
    app.add_routes(
        [
            web.post("/0/{method:.*}", routes.handle),
            web.get("/.well-known/pay-callback-keys.json", control.jwks),
            web.post("/_sim/requests", control.create_requests),
            web.post("/_sim/requests/pay", control.pay),
            web.post("/_sim/requests/expire", control.expire),
            web.get("/_sim/webhooks", control.get_webhooks),
            web.post("/_sim/webhooks", control.register_webhook),
            web.delete("/_sim/webhooks", control.clear_webhooks),
            web.get("/_sim/requests", control.get_request),
            web.get("/_sim/requests/summary", control.summary),
            web.get("/_sim/faults", control.get_faults),
            web.post("/_sim/faults", control.set_faults),
            web.delete("/_sim/faults", control.clear_faults),
            web.get("/_sim/stats", control.stats),
            web.post("/_sim/reset", control.reset),
        ]
    )
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
    return web.Response(
        text=page,
        status=status,
        reason=reason,
        content_type="text/html",
        headers={"Server": "cloudflare"},
    )


class _KrakenRoutes:
    """``POST /0/...``: draw a fault, then answer as Kraken would, or fail as the network would."""

    def __init__(
        self,
        kraken: KrakenPay,
        faults: Faults,
        counters: Counters,
        latency: tuple[float, float] | None = None,
    ) -> None:
        self._kraken = kraken
        self._latency = latency
        self._faults = faults
        self._counters = counters
        self._stopping = asyncio.Event()
        self._on_fault: dict[str, Callable[[web.Request, Fault], Awaitable[web.Response]]] = {
            "reset_before": self._reset_before,
            "reset_after": self._reset_after,
            "delay": self._delay,
            "http_5xx": self._http_5xx,
            "malformed_json": self._malformed_json,
        } | dict.fromkeys(_ERROR_FAULTS, self._kraken_error)

    async def handle(self, request: web.Request) -> web.Response:
        self._counters.requests += 1
        fault = self._faults.draw()
        if fault is None:
            body = self._process(request, await request.read())
            if self._latency is not None:
                await asyncio.sleep(random.uniform(*self._latency))
            return _json(body)
        injected = self._counters.faults_injected
        injected[fault.kind] = injected.get(fault.kind, 0) + 1
        return await self._on_fault[fault.kind](request, fault)

    async def on_shutdown(self, app: web.Application) -> None:
        """Wake delayed calls, so a stopping server does not wait out their delay."""
        self._stopping.set()

    def _process(self, request: web.Request, body: bytes) -> bytes:
        headers = request.headers
        return self._kraken.call(
            request.path, headers.get("API-Key"), headers.get("API-Sign"), body
        )

    async def _reset_before(self, request: web.Request, fault: Fault) -> web.Response:
        return _reset_connection(request)

    async def _reset_after(self, request: web.Request, fault: Fault) -> web.Response:
        self._process(request, await request.read())
        return _reset_connection(request)

    async def _delay(self, request: web.Request, fault: Fault) -> web.Response:
        # Read first: once the client gives up, the body can no longer be read, yet the
        # call must still take effect (aiohttp does not cancel handlers on disconnect).
        body = await request.read()
        try:
            await asyncio.wait_for(self._stopping.wait(), fault.seconds)
        except asyncio.TimeoutError:
            return _json(self._process(request, body))
        return _reset_connection(request)  # shutting down: the call never arrived

    async def _http_5xx(self, request: web.Request, fault: Fault) -> web.Response:
        return _cloudflare_page(fault.status)

    async def _malformed_json(self, request: web.Request, fault: Fault) -> web.Response:
        body = self._process(request, await request.read())
        return _json(body[: len(body) // 2])

    async def _kraken_error(self, request: web.Request, fault: Fault) -> web.Response:
        return _json(answer(_ERROR_FAULTS[fault.kind]))


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _answers_400(handler: Handler) -> Handler:
    """Turn a ``ValueError`` (whose message names the field) into a 400 answer."""

    async def wrapper(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except TransitionError as exc:  # no such request (404), or not pending (409)
            return web.json_response({"error": str(exc)}, status=exc.status)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)

    return wrapper


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        payload = json.loads(await request.read())
    except (UnicodeDecodeError, ValueError):
        raise ValueError("body: must be a JSON object") from None
    if not isinstance(payload, dict):
        raise ValueError("body: must be a JSON object")
    return payload


class _ControlRoutes:
    """``/_sim/``: the Simulator's own methods, over HTTP, for tests in other processes."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self.create_requests = _answers_400(self._create_requests)
        self.get_request = _answers_400(self._get_request)
        self.set_faults = _answers_400(self._set_faults)
        self.pay = _answers_400(self._pay)
        self.expire = _answers_400(self._expire)
        self.register_webhook = _answers_400(self._register_webhook)

    async def _create_requests(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        state = payload.get("state", "pending")
        if "external_ids" in payload:
            ids = payload["external_ids"]
            if not isinstance(ids, list):
                raise ValueError("external_ids: must be a list of ids")
        elif "external_id" in payload:
            ids = [canonical_external_id(payload["external_id"])]
        else:
            raise ValueError("external_id: required (or external_ids for many)")
        created = self._sim.create_requests(ids, state)
        return web.json_response({"created": created}, status=201)

    async def _get_request(self, request: web.Request) -> web.Response:
        value = request.query.get("external_id")
        if value is None:
            raise ValueError("external_id: required query parameter")
        # An unencoded '+' arrives as a space; base64 has no spaces, so restore it.
        found = self._sim.request(value.replace(" ", "+"))
        if found is None:
            return web.json_response({"error": "external_id: no such payment request"}, status=404)
        return web.json_response(found)

    async def _pay(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        kraktag = payload.get("customer_kraktag", "sim-payer")
        if kraktag is not None and not isinstance(kraktag, str):
            raise ValueError("customer_kraktag: must be a string or null")
        eid = canonical_external_id(payload.get("external_id"))
        return web.json_response(self._sim.pay(eid, kraktag))

    async def _expire(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        eid = canonical_external_id(payload.get("external_id"))
        return web.json_response(self._sim.expire(eid))

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self._sim.jwks())

    async def get_webhooks(self, request: web.Request) -> web.Response:
        return web.json_response({"urls": self._sim.webhooks()})

    async def _register_webhook(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        urls = self._sim.register_webhook(payload.get("url"))
        return web.json_response({"urls": urls}, status=201)

    async def clear_webhooks(self, request: web.Request) -> web.Response:
        self._sim.clear_webhooks()
        return web.json_response({"urls": []})

    async def summary(self, request: web.Request) -> web.Response:
        return web.json_response(self._sim.summary())

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._sim.faults())

    async def _set_faults(self, request: web.Request) -> web.Response:
        self._sim.set_faults(await _json_object(request))
        return web.json_response(self._sim.faults())

    async def clear_faults(self, request: web.Request) -> web.Response:
        self._sim.clear_faults()
        return web.json_response({})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._sim.stats())

    async def reset(self, request: web.Request) -> web.Response:
        self._sim.reset()
        return web.json_response({"reset": True})
