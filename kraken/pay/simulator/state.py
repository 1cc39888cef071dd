"""What the simulated Kraken remembers: payment requests, nonces, rate budgets and counts.

Plain data structures with no I/O, driven from the server's single event loop, so none of
them needs a lock.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from kraken.pay import InvalidExternalId, normalize_external_id

__all__ = [
    "STATES",
    "Counters",
    "NonceGuard",
    "PaymentRequest",
    "PaymentRequests",
    "TokenBuckets",
    "TransitionError",
    "canonical_external_id",
]

STATES = ("pending", "paid", "expired", "cancelled")
# The status a Kraken Pay notification reports for each state a request can move to.
NOTIFIED_STATUS = {"paid": "success", "expired": "expired", "cancelled": "cancelled"}

# Called with (external_id, status, customer_kraktag) when a request changes state.
OnChange = Callable[[str, str, str | None], None]


class TransitionError(ValueError):
    """A control asked for a change Kraken Pay would not make; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def canonical_external_id(value: Any, name: str = "external_id") -> str:
    """Return the canonical id for ``value`` or raise ``ValueError`` naming the field ``name``."""
    try:
        return normalize_external_id(value)
    except InvalidExternalId as exc:
        raise ValueError(f"{name}: {exc.rule}") from None


@dataclass(slots=True)
class PaymentRequest:
    state: str
    cancel_calls: int = 0
    cancelled_at: float | None = None  # unix time of the call that cancelled it
    customer_kraktag: str | None = None  # the payer, once paid


class PaymentRequests:
    """Payment requests by canonical ``external_id``, and the rules of their states.

    ``on_change`` hears every change of state (cancelled, paid, expired), never a creation.
    """

    def __init__(self, on_change: OnChange | None = None) -> None:
        self._by_id: dict[str, PaymentRequest] = {}
        self.on_change = on_change

    def create(self, ids: Iterable[Any], state: str = "pending") -> int:
        """Create (or replace) one request per id; validate everything before changing anything."""
        if state not in STATES:
            raise ValueError(f"state: must be one of {', '.join(STATES)}, got {state!r}")
        if isinstance(ids, (str, bytes)):
            raise ValueError("external_ids: must be a list of ids, not a single string")
        canonical = [canonical_external_id(v, f"external_ids[{i}]") for i, v in enumerate(ids)]
        for eid in canonical:
            self._by_id[eid] = PaymentRequest(state)
        return len(canonical)

    def get(self, eid: str) -> PaymentRequest | None:
        return self._by_id.get(eid)

    def cancel(self, eid: str) -> str | None:
        """Apply one cancel call; return ``None`` if it cancelled, else the Pay error type."""
        request = self._by_id.get(eid)
        if request is None:
            return "RequestNotFound"
        request.cancel_calls += 1
        if request.state == "pending":
            request.cancelled_at = time.time()
            self._move(eid, request, "cancelled")
            return None
        if request.state == "cancelled":
            return "RequestAlreadyCancelled"
        return "RequestNotCancellable"

    def pay(self, eid: str, customer_kraktag: str | None) -> PaymentRequest:
        """The customer pays a pending request (the simulator's control, not a Kraken call)."""
        request = self._pending(eid, "paid")
        request.customer_kraktag = customer_kraktag
        self._move(eid, request, "paid")
        return request

    def expire(self, eid: str) -> PaymentRequest:
        """A pending request reaches its expiry."""
        request = self._pending(eid, "expired")
        self._move(eid, request, "expired")
        return request

    def _pending(self, eid: str, target: str) -> PaymentRequest:
        request = self._by_id.get(eid)
        if request is None:
            raise TransitionError("external_id: no such payment request", 404)
        if request.state != "pending":
            raise TransitionError(
                f"state: only a pending request can become {target}, this one is {request.state}",
                409,
            )
        return request

    def _move(self, eid: str, request: PaymentRequest, state: str) -> None:
        request.state = state
        if self.on_change is not None:
            kraktag = request.customer_kraktag if state == "paid" else None
            self.on_change(eid, NOTIFIED_STATUS[state], kraktag)

    def summary(self) -> dict[str, Any]:
        """Counts by state and by number of cancel calls: cheap proof of "exactly once"."""
        by_state: dict[str, int] = {}
        calls = {"0": 0, "1": 0, ">1": 0}
        for request in self._by_id.values():
            by_state[request.state] = by_state.get(request.state, 0) + 1
            n = request.cancel_calls
            calls["0" if n == 0 else "1" if n == 1 else ">1"] += 1
        return {"total": len(self._by_id), "by_state": by_state, "cancel_calls": calls}

    def cancelled_at(self) -> dict[str, float]:
        """When each cancelled request was cancelled (unix time): proof of "not early"."""
        return {
            eid: request.cancelled_at
            for eid, request in self._by_id.items()
            if request.cancelled_at is not None
        }

    def clear(self) -> None:
        self._by_id.clear()


class _KeyNonces:
    """One key's nonce history: the highest accepted, and the used ones still in the window."""

    __slots__ = ("floor", "heap", "highest", "used")

    def __init__(self) -> None:
        self.highest = 0
        self.floor = 0  # nonces at or below it are rejected: they may have been forgotten
        self.used: set[int] = set()
        self.heap: list[int] = []


class NonceGuard:
    """Kraken's nonce rule, per API key.

    A nonce must exceed the highest one accepted for the key. With a nonce window ``W``, a
    nonce above ``highest - W`` is also accepted once. Used nonces are remembered up to
    ``memory`` per key; forgetting one raises a floor instead, so a replay is never accepted.
    """

    def __init__(self, window: int = 0, memory: int = 65_536) -> None:
        if window < 0:
            raise ValueError(f"nonce_window: must be >= 0, got {window}")
        self.window = window
        self._memory = memory
        self._keys: dict[str, _KeyNonces] = {}

    def accept(self, key: str, nonce: int) -> bool:
        seen = self._keys.get(key)
        if seen is None:
            seen = self._keys[key] = _KeyNonces()
        if not self.window:
            if nonce <= seen.highest:
                return False
            seen.highest = nonce
            return True
        if nonce <= seen.highest and (
            nonce <= seen.highest - self.window or nonce <= seen.floor or nonce in seen.used
        ):
            return False
        self._remember(seen, nonce)
        return True

    def _remember(self, seen: _KeyNonces, nonce: int) -> None:
        seen.highest = max(seen.highest, nonce)
        seen.used.add(nonce)
        heapq.heappush(seen.heap, nonce)
        oldest_allowed = seen.highest - self.window
        while seen.heap and (seen.heap[0] <= oldest_allowed or len(seen.heap) > self._memory):
            forgotten = heapq.heappop(seen.heap)
            seen.used.discard(forgotten)
            seen.floor = max(seen.floor, forgotten)

    def clear(self) -> None:
        self._keys.clear()


class TokenBuckets:
    """One token bucket per API key: ``capacity`` calls at once, refilled at ``per_second``."""

    def __init__(
        self, capacity: float, per_second: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not capacity >= 1:
            raise ValueError(f"rate_limit: capacity must be >= 1, got {capacity}")
        if not per_second >= 0:
            raise ValueError(f"rate_limit: refill per second must be >= 0, got {per_second}")
        self.capacity = float(capacity)
        self.per_second = float(per_second)
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last refill time]

    def take(self, key: str) -> bool:
        """Spend one token for ``key``; ``False`` when the bucket is empty."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.capacity, now]
        tokens = min(self.capacity, bucket[0] + (now - bucket[1]) * self.per_second)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1
        return True

    def clear(self) -> None:
        self._buckets.clear()


@dataclass
class Counters:
    """Everything the simulator counts; ``as_dict()`` is what ``/_sim/stats`` shows."""

    requests: int = 0
    cancels_applied: int = 0
    repeated_cancels: int = 0
    not_found: int = 0
    not_cancellable: int = 0
    nonce_rejections: int = 0
    signature_rejections: int = 0
    key_rejections: int = 0
    rate_limited: int = 0
    invalid_arguments: int = 0
    connections_opened: int = 0
    bodies_too_large: int = 0  # bodies refused for their size, on any route
    slow_requests: int = 0  # connections closed: headers or body not sent in time
    faults_injected: dict[str, int] = field(default_factory=dict)
    webhooks_notified: int = 0  # state changes announced, times registered URLs
    webhooks_sent: int = 0  # POST attempts, retries and duplicates included
    webhooks_acknowledged: int = 0  # deliveries answered 2xx
    webhooks_retried: int = 0  # attempts answered non-2xx or not at all, then tried again
    webhooks_failed: int = 0  # deliveries given up after the last attempt
    webhook_faults_injected: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        counts: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in counts.items():
            if isinstance(value, dict):
                counts[name] = dict(value)
        return counts

    def reset(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            setattr(self, f.name, dict.fromkeys(value, 0) if isinstance(value, dict) else 0)
