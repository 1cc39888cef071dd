"""A fake KrakenPayClient for the tasks' unit tests, and the errors it raises."""

from __future__ import annotations

import json

from kraken.pay.errors import PayRequestError, parse_response


def pay_error(error_type: str) -> PayRequestError:
    """The exception the client raises for one of Kraken Pay's structured answers."""
    error = {"severity": "E", "errorClass": "EPay", "type": error_type, "errorMessage": "m"}
    try:
        parse_response(200, json.dumps({"error": [error]}).encode())
    except PayRequestError as exc:
        return exc
    raise AssertionError("not an error")


class ScriptedClient:
    """Answers each call with the next step: a result, or an exception to raise."""

    def __init__(self, *steps: object) -> None:
        self.steps = list(steps)
        self.calls: list[str] = []

    async def cancel_request(self, eid: str) -> object:
        self.calls.append(eid)
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    async def close(self) -> None:
        pass
