"""The one fake of ``KrakenPayClient`` (what the tasks call), and the errors it raises."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping

from kraken.pay.errors import KrakenError, PayRequestError, parse_response


def kraken_error(code: str) -> KrakenError:
    """The exception the client raises for one of Kraken's error strings (``EAPI:...``)."""
    try:
        parse_response(200, json.dumps({"error": [code]}).encode())
    except KrakenError as exc:
        return exc
    raise AssertionError("not an error")


def pay_error(error_type: str) -> PayRequestError:
    """The exception the client raises for one of Kraken Pay's structured answers."""
    error = {"severity": "E", "errorClass": "EPay", "type": error_type, "errorMessage": "m"}
    try:
        parse_response(200, json.dumps({"error": [error]}).encode())
    except PayRequestError as exc:
        return exc
    raise AssertionError("not an error")


class ScriptedClient:
    """Answers ``cancel_request`` from a script; a step is an answer or an exception to raise.

    ``ScriptedClient(step, step, ...)``: each call takes the next step, whatever its id, and a
    call past the last step fails the test. ``ScriptedClient(script={eid: [step, ...]})``: an
    id takes its own steps first, then every call answers ``{}`` (cancelled). ``latency``
    holds each call that long on the loop. ``calls`` lists the ids called, in order;
    ``peak`` is the most calls that were in flight at once.
    """

    def __init__(
        self,
        *steps: object,
        script: Mapping[str, Iterable[object]] | None = None,
        latency: float = 0.0,
    ) -> None:
        self.steps = list(steps)
        self.script = {eid: list(own) for eid, own in (script or {}).items()}
        self.latency = latency
        self.calls: list[str] = []
        self.in_flight = 0
        self.peak = 0
        self.closed = False
        self._strict = bool(steps)

    async def cancel_request(self, eid: str) -> object:
        self.calls.append(eid)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.latency)  # a turn of the loop even at 0, as a real call
            step = self._next(eid)
            if isinstance(step, BaseException):
                raise step
            return step
        finally:
            self.in_flight -= 1

    def _next(self, eid: str) -> object:
        own = self.script.get(eid)
        if own:
            return own.pop(0)
        if self.steps:
            return self.steps.pop(0)
        if self._strict:
            raise AssertionError(f"call {len(self.calls)} ({eid}) is past the script")
        return {}

    async def close(self) -> None:
        self.closed = True
