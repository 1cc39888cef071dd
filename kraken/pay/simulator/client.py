"""``SimulatorClient``: the controls of a simulator in another process, over its ``/_sim`` routes.

Synchronous (stdlib ``urllib``), like ``SimulatorThread``, so a test, a benchmark or a shell
reaches ``python -m kraken.pay.simulator``, a docker-compose service or a simulator started
by another test process with the same methods as the in-process handles::

    sim = SimulatorClient("http://127.0.0.1:8765")
    sim.create_requests([eid]); sim.set_faults({"http_5xx": {"rate": 0.1}}); sim.stats()
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from kraken.pay.simulator.controls import implements_controls
from kraken.pay.simulator.state import canonical_external_id
from kraken.pay.simulator.wire import CONTROL_ROUTES, JWKS_PATH

__all__ = ["ControlRefused", "SimulatorClient"]


class ControlRefused(ValueError):
    """The simulator refused a control (an HTTP error answer); its message names the field."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@implements_controls
class SimulatorClient:
    """The controls of the simulator at ``url``; ids are canonicalised here, as in-process."""

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    def __repr__(self) -> str:
        return f"SimulatorClient({self.url!r})"

    # -------------------------------------------------------------------- controls

    def create_requests(self, ids: Iterable[Any], state: str = "pending") -> int:
        if isinstance(ids, (str, bytes)):
            raise ValueError("external_ids: must be a list of ids, not a single string")
        canonical = [canonical_external_id(v, f"external_ids[{i}]") for i, v in enumerate(ids)]
        return self._call("create_requests", {"external_ids": canonical, "state": state})

    def request(self, external_id: Any) -> dict[str, Any] | None:
        query = {"external_id": canonical_external_id(external_id)}
        try:
            return self._call("request", query=query)
        except ControlRefused as exc:
            if exc.status == 404:
                return None
            raise

    def summary(self) -> dict[str, Any]:
        return self._call("summary")

    def cancelled_at(self) -> dict[str, float]:
        return self._call("cancelled_at")

    def pay(self, external_id: Any, customer_kraktag: str | None = "sim-payer") -> dict[str, Any]:
        eid = canonical_external_id(external_id)
        return self._call("pay", {"external_id": eid, "customer_kraktag": customer_kraktag})

    def expire(self, external_id: Any) -> dict[str, Any]:
        return self._call("expire", {"external_id": canonical_external_id(external_id)})

    def set_faults(self, spec: Mapping[str, Any]) -> None:
        self._call("set_faults", dict(spec))

    def clear_faults(self) -> None:
        self._call("clear_faults")

    def faults(self) -> dict[str, dict[str, Any]]:
        return self._call("faults")

    def jwks(self) -> dict[str, Any]:
        return self._call("jwks")

    def register_webhook(self, url: str) -> list[str]:
        return self._call("register_webhook", {"url": url})

    def webhooks(self) -> list[str]:
        return self._call("webhooks")

    def clear_webhooks(self) -> None:
        self._call("clear_webhooks")

    def wait_webhooks(self, timeout: float = 30.0) -> None:
        try:
            self._call("wait_webhooks", {"timeout": timeout}, timeout=timeout + self.timeout)
        except ControlRefused as exc:
            if exc.status == 504:
                raise TimeoutError(str(exc)) from None
            raise

    def stats(self) -> dict[str, Any]:
        return self._call("stats")

    def reset(self) -> None:
        self._call("reset")

    # -------------------------------------------------------------------- HTTP

    def _call(
        self,
        control: str,
        body: dict[str, Any] | None = None,
        *,
        query: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One control over HTTP, as :data:`CONTROL_ROUTES` says; its result, or an error."""
        route = CONTROL_ROUTES[control]
        url = self.url + route.path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if route.verb == "GET" else json.dumps(body or {}).encode()
        request = urllib.request.Request(
            url, data=data, method=route.verb, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                raise ControlRefused(_error_of(exc), exc.code) from None
        return answer if route.result is None else answer[route.result]


def _error_of(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code} {exc.reason}"
