"""Fault injection: which failure, if any, the next Kraken call meets.

A spec maps a fault kind to when it fires, either by probability or for the next N calls::

    {"reset_before": {"next": 2}, "http_5xx": {"rate": 0.05, "status": 520},
     "delay": {"next": 1, "seconds": 3.0}}

At most one fault applies per call: kinds are tried in the order of :data:`KINDS`, and the
draws come from one ``random.Random(seed)``, so a seeded run is reproducible.

The same spec may name :data:`WEBHOOK_KINDS`: those are drawn once per status notification the
simulator sends (not per Kraken call), by a ``Faults`` of their own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "WEBHOOK_KINDS", "Fault", "FaultSpecError", "Faults", "split_spec"]

KINDS = (
    "reset_before",
    "reset_after",
    "delay",
    "http_5xx",
    "malformed_json",
    "rate_limit",
    "service_unavailable",
    "invalid_nonce",
    "lockout",
)

WEBHOOK_KINDS = (
    "webhook_duplicate",  # the notification is delivered twice
    "webhook_delay",  # the first attempt waits ``seconds``
    "webhook_expired",  # the token's exp has passed
    "webhook_unknown_key",  # signed by a key whose kid is not in the JWKS
    "webhook_bad_signature",  # the signature does not match the claims
)

# Options some kinds take besides "rate"/"next", with their defaults.
_OPTIONS: dict[str, dict[str, float]] = {
    "delay": {"seconds": 2.0},
    "http_5xx": {"status": 502},
    "webhook_delay": {"seconds": 2.0},
}


class FaultSpecError(ValueError):
    """A fault spec that cannot work; the message starts with the offending field."""


@dataclass
class Fault:
    """One configured fault: fires with probability ``rate``, or on the next ``remaining`` calls."""

    kind: str
    rate: float | None = None
    remaining: int | None = None
    seconds: float = 2.0
    status: int = 502

    def describe(self) -> dict[str, Any]:
        when: dict[str, Any] = (
            {"rate": self.rate} if self.rate is not None else {"next": self.remaining}
        )
        return when | {name: getattr(self, name) for name in _OPTIONS.get(self.kind, {})}


class Faults:
    """The active fault set and the seeded random source that decides when they fire."""

    def __init__(self, seed: int | None = None, kinds: tuple[str, ...] = KINDS) -> None:
        self._seed = seed
        self._kinds = kinds
        self._random = random.Random(seed)
        self._active: list[Fault] = []

    def set(self, spec: Mapping[str, Any]) -> None:
        """Replace the active faults with ``spec``; on error nothing changes."""
        self._active = parse_spec(spec, self._kinds)

    def clear(self) -> None:
        self._active = []

    def reset(self) -> None:
        """Clear the faults and restart the random sequence from the seed."""
        self.clear()
        self._random = random.Random(self._seed)

    def describe(self) -> dict[str, dict[str, Any]]:
        return {fault.kind: fault.describe() for fault in self._active}

    def draw(self) -> Fault | None:
        """The fault the next call meets, if any; a ``next`` fault is used up as it fires."""
        for fault in self._active:
            if fault.remaining is not None:
                if fault.remaining > 0:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._active.remove(fault)
                    return fault
            elif self._random.random() < fault.rate:  # type: ignore[operator]
                return fault
        return None


def parse_spec(spec: Any, kinds: tuple[str, ...] = KINDS) -> list[Fault]:
    """Validate a whole spec; the faults come back in the order of ``kinds``."""
    if not isinstance(spec, Mapping):
        raise FaultSpecError("faults: must be an object mapping a fault kind to its settings")
    unknown = [kind for kind in spec if kind not in kinds]
    if unknown:
        raise FaultSpecError(f"{unknown[0]}: unknown fault kind; known: {', '.join(kinds)}")
    return [_parse_fault(kind, spec[kind]) for kind in kinds if kind in spec]


def split_spec(spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(api faults, webhook faults)`` of one spec, both validated: a bad spec changes nothing."""
    if not isinstance(spec, Mapping):
        raise FaultSpecError("faults: must be an object mapping a fault kind to its settings")
    unknown = [kind for kind in spec if kind not in KINDS + WEBHOOK_KINDS]
    if unknown:
        known = ", ".join(KINDS + WEBHOOK_KINDS)
        raise FaultSpecError(f"{unknown[0]}: unknown fault kind; known: {known}")
    api = {kind: value for kind, value in spec.items() if kind in KINDS}
    hooks = {kind: value for kind, value in spec.items() if kind in WEBHOOK_KINDS}
    parse_spec(api, KINDS)
    parse_spec(hooks, WEBHOOK_KINDS)
    return api, hooks


def _parse_fault(kind: str, settings: Any) -> Fault:
    if not isinstance(settings, Mapping):
        raise FaultSpecError(f'{kind}: must be an object such as {{"rate": 0.1}} or {{"next": 1}}')
    allowed = {"rate", "next", *_OPTIONS.get(kind, {})}
    for name in settings:
        if name not in allowed:
            raise FaultSpecError(f"{kind}.{name}: unknown setting; allowed: {sorted(allowed)}")
    if ("rate" in settings) == ("next" in settings):
        raise FaultSpecError(f"{kind}: needs exactly one of 'rate' (a probability) or 'next'")
    fault = Fault(kind)
    if "rate" in settings:
        fault.rate = _number(settings["rate"], f"{kind}.rate", 0.0, 1.0)
    else:
        fault.remaining = int(_number(settings["next"], f"{kind}.next", 0, math.inf, whole=True))
    if "seconds" in settings:
        fault.seconds = _number(settings["seconds"], f"{kind}.seconds", 0.0, 3600.0)
    if "status" in settings:
        fault.status = int(_number(settings["status"], f"{kind}.status", 500, 599, whole=True))
    return fault


def _number(value: Any, name: str, low: float, high: float, *, whole: bool = False) -> float:
    kinds: tuple[type, ...] = (int,) if whole else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    if not ok or not low <= value <= high:
        what = "an integer" if whole else "a number"
        raise FaultSpecError(f"{name}: must be {what} from {low} to {high}, got {value!r}")
    return value
