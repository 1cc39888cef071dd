"""``/_sim/``: each control of ``SimulatorControls`` over HTTP, for tests in other processes.

One handler per entry of :data:`~kraken.pay.simulator.wire.CONTROL_ROUTES`, named as the
control; :func:`add_control_routes` fails at once if one is missing. A body is bounded like the
Kraken path's (``max_control_body``, ``body_timeout``, ``max_json_depth``), never faulted.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kraken.pay.simulator.bodies import BodyTooLarge, SlowBody, loads_object, read_body
from kraken.pay.simulator.options import SimulatorOptions
from kraken.pay.simulator.state import Counters, TransitionError, canonical_external_id
from kraken.pay.simulator.wire import CONTROL_ROUTES, Route

if TYPE_CHECKING:
    from kraken.pay.simulator.server import Simulator

__all__ = ["add_control_routes"]

_Handler = Callable[[web.Request, dict[str, Any]], Awaitable[Any]]


def add_control_routes(
    app: web.Application, sim: Simulator, counters: Counters, options: SimulatorOptions
) -> None:
    """Route every control to its handler, each answering in its route's shape."""
    handlers = _Handlers(sim)
    for name, route in CONTROL_ROUTES.items():
        handler = getattr(handlers, name)
        app.router.add_route(route.verb, route.path, _answering(handler, route, counters, options))


def _answering(
    handler: _Handler, route: Route, counters: Counters, options: SimulatorOptions
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Read the body within bounds, run ``handler``, and turn its errors into answers."""
    depth = options.max_json_depth

    async def answering(request: web.Request) -> web.StreamResponse:
        try:
            body = b""
            if route.verb != "GET":
                body = await read_body(request, options.max_control_body, options.body_timeout)
            result = await handler(request, _payload(body, depth))
        except BodyTooLarge as exc:
            counters.bodies_too_large += 1
            return _error(str(exc), 413, close=True)
        except SlowBody:
            counters.slow_requests += 1
            request.protocol.force_close()
            return web.Response()
        except TransitionError as exc:  # no such request (404), or not pending (409)
            return _error(str(exc), exc.status)
        except ValueError as exc:  # the message names the field
            return _error(str(exc), 400)
        except asyncio.TimeoutError as exc:
            return _error(str(exc) or "timeout: not done in time", 504)
        value = result if route.result is None else {route.result: result}
        return web.json_response(value, status=route.status)

    return answering


def _error(message: str, status: int, *, close: bool = False) -> web.Response:
    response = web.json_response({"error": message}, status=status)
    if close:
        response.force_close()
    return response


def _payload(body: bytes, depth: int) -> dict[str, Any]:
    if not body.strip():
        return {}
    payload = loads_object(body, depth)
    if payload is None:
        raise ValueError(f"body: must be a JSON object, nested at most {depth} deep")
    return payload


def _query_id(request: web.Request) -> str:
    value = request.query.get("external_id")
    if value is None:
        raise ValueError("external_id: required query parameter")
    return value.replace(" ", "+")  # an unencoded '+' arrives as a space; base64 has none


class _Handlers:
    """One coroutine per control: arguments from the query or the JSON body, then the call."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    async def create_requests(self, request: web.Request, payload: dict[str, Any]) -> int:
        state = payload.get("state", "pending")
        if "external_ids" in payload:
            ids = payload["external_ids"]
            if not isinstance(ids, list):
                raise ValueError("external_ids: must be a list of ids")
        elif "external_id" in payload:
            ids = [canonical_external_id(payload["external_id"])]
        else:
            raise ValueError("external_id: required (or external_ids for many)")
        return self._sim.create_requests(ids, state)

    async def request(self, request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        found = self._sim.request(_query_id(request))
        if found is None:
            raise TransitionError("external_id: no such payment request", 404)
        return found

    async def summary(self, request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        return self._sim.summary()

    async def cancelled_at(self, request: web.Request, payload: dict[str, Any]) -> Any:
        return self._sim.cancelled_at()

    async def pay(self, request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        kraktag = payload.get("customer_kraktag", "sim-payer")
        if kraktag is not None and not isinstance(kraktag, str):
            raise ValueError("customer_kraktag: must be a string or null")
        return self._sim.pay(canonical_external_id(payload.get("external_id")), kraktag)

    async def expire(self, request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        return self._sim.expire(canonical_external_id(payload.get("external_id")))

    async def set_faults(self, request: web.Request, payload: dict[str, Any]) -> Any:
        self._sim.set_faults(payload)
        return self._sim.faults()

    async def clear_faults(self, request: web.Request, payload: dict[str, Any]) -> Any:
        self._sim.clear_faults()
        return {}

    async def faults(self, request: web.Request, payload: dict[str, Any]) -> Any:
        return self._sim.faults()

    async def jwks(self, request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        return self._sim.jwks()

    async def register_webhook(self, request: web.Request, payload: dict[str, Any]) -> list[str]:
        return self._sim.register_webhook(payload.get("url"))  # type: ignore[arg-type]

    async def webhooks(self, request: web.Request, payload: dict[str, Any]) -> list[str]:
        return self._sim.webhooks()

    async def clear_webhooks(self, request: web.Request, payload: dict[str, Any]) -> Any:
        self._sim.clear_webhooks()
        return {"urls": []}

    async def wait_webhooks(self, request: web.Request, payload: dict[str, Any]) -> Any:
        timeout = payload.get("timeout", 30.0)
        number = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
        if not number or not 0 < timeout <= 600 or math.isnan(timeout):
            raise ValueError(f"timeout: must be more than 0 and at most 600 seconds, not {timeout}")
        try:
            await self._sim.wait_webhooks(timeout)
        except asyncio.TimeoutError:
            message = f"timeout: deliveries still in flight after {timeout:g}s"
            raise asyncio.TimeoutError(message) from None
        return {"drained": True}

    async def stats(self, request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        return self._sim.stats()

    async def reset(self, request: web.Request, payload: dict[str, Any]) -> Any:
        self._sim.reset()
        return {"reset": True}
