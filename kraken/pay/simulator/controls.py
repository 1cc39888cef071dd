"""The simulator's controls, defined once: what a test can ask of a running simulator.

Three handles implement :class:`SimulatorControls`: the in-process ``Simulator``, the
``SimulatorThread`` (its forwarders are made from ``Simulator``'s methods) and the HTTP
``SimulatorClient``, which reaches a simulator in another process through the routes of
:data:`~kraken.pay.simulator.wire.CONTROL_ROUTES`. A test,
``tests/unit/simulator/test_simulator_controls.py``, checks that the protocol, the routes and
the three handles name the same controls with the same parameters, so adding a control fails
that test until it exists everywhere.

Errors are ``ValueError`` on every handle, the message starting with the offending field; a
request that does not exist (``pay``, ``expire``) or is not pending is a ``ValueError`` too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["AWAITED_IN_PROCESS", "CONTROL_NAMES", "SimulatorControls", "implements_controls"]


@runtime_checkable
class SimulatorControls(Protocol):
    """Create and read payment requests, inject faults, drive notifications, count, reset."""

    @property
    def url(self) -> str:
        """The base URL to give a client, e.g. ``http://127.0.0.1:54321``."""
        ...

    def create_requests(self, ids: Iterable[Any], state: str = "pending") -> int:
        """Create (or replace) payment requests; ids are canonical strings, UUIDs, ints or bytes."""
        ...

    def request(self, external_id: Any) -> dict[str, Any] | None:
        """``{"external_id", "state", "cancel_calls"}`` of one payment request, or ``None``."""
        ...

    def summary(self) -> dict[str, Any]:
        """``{"total", "by_state": {state: n}, "cancel_calls": {"0": n, "1": n, ">1": n}}``."""
        ...

    def cancelled_at(self) -> dict[str, float]:
        """``{external_id: unix time}`` of the moment each cancelled request was cancelled."""
        ...

    def pay(self, external_id: Any, customer_kraktag: str | None = "sim-payer") -> dict[str, Any]:
        """The customer pays a pending request: a ``success`` notification follows."""
        ...

    def expire(self, external_id: Any) -> dict[str, Any]:
        """A pending request expires: an ``expired`` notification follows."""
        ...

    def set_faults(self, spec: Mapping[str, Any]) -> None:
        """Replace the active faults, e.g. ``{"reset_before": {"next": 2}}``; webhook kinds too."""
        ...

    def clear_faults(self) -> None:
        """No fault strikes any more; the random sequence goes on."""
        ...

    def faults(self) -> dict[str, dict[str, Any]]:
        """The active faults, in the spec's shape, with ``next`` counting down."""
        ...

    def jwks(self) -> dict[str, Any]:
        """The public keys notifications are signed with, as ``jwks_url`` serves them."""
        ...

    def register_webhook(self, url: str) -> list[str]:
        """Send every later state change to ``url`` too; returns the registered URLs."""
        ...

    def webhooks(self) -> list[str]:
        """The registered notification URLs."""
        ...

    def clear_webhooks(self) -> None:
        """Forget the URLs; deliveries in flight are abandoned."""
        ...

    def wait_webhooks(self, timeout: float = 30.0) -> None:
        """Return once every notification sent so far was acknowledged or given up.

        ``TimeoutError`` after ``timeout`` seconds. The in-process ``Simulator`` runs on the
        caller's loop, so there it is a coroutine: ``await sim.wait_webhooks()``.
        """
        ...

    def stats(self) -> dict[str, Any]:
        """Everything counted: calls, outcomes, rejections, faults, connections, deliveries."""
        ...

    def reset(self) -> None:
        """Forget requests, nonces, rate budgets, faults, webhook URLs and counts; keys stay.

        URLs given in the options (``webhooks=``) are registered again.
        """
        ...


# The controls in the order above; `url` is an attribute, not a control.
CONTROL_NAMES: tuple[str, ...] = tuple(
    name for name in SimulatorControls.__dict__ if not name.startswith("_") and name != "url"
)

# Controls that the in-process Simulator offers as coroutines, because they wait on its loop.
AWAITED_IN_PROCESS = frozenset({"wait_webhooks"})

T = TypeVar("T", bound=type)


def implements_controls(cls: T) -> T:
    """Give ``cls``'s controls the protocol's docstrings, so ``help()`` shows one text."""
    for name in CONTROL_NAMES:
        method = cls.__dict__.get(name)
        if method is not None and not getattr(method, "__doc__", None):
            method.__doc__ = getattr(SimulatorControls, name).__doc__
    return cls
