"""A chunk's ids, cancelled on the worker's event loop by a few lanes under one key.

``KRAKEN_BULK_CONCURRENCY`` lanes pull ids from one iterator, so a chunk never holds more
coroutines than lanes. Per-call trouble (connection errors, 5xx, maintenance) is retried a
few times at once; an id still failing is handed off (to ``cancel_request``, by the chunk
task). Key-wide trouble (the rate budget, a rate limit, a lockout) pauses every lane. Lanes
stop starting calls after a time window; what is left is carried to a continuation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kraken.pay import (
    AuthenticationError,
    KrakenError,
    PayRequestError,
    RateLimited,
    TemporaryLockout,
    TransientError,
)
from tasks import logs, metrics
from tasks.outcomes import OUTCOMES, kraken_error, pay_outcome
from tasks.retry import RetryPolicy

__all__ = ["MAX_WINDOW", "QUICK_ATTEMPTS", "ChunkProgress", "cancel_many", "error_text"]

QUICK_ATTEMPTS = 3  # calls for one id inside a chunk before it is handed to cancel_request
QUICK_MAX_DELAY = 1.0  # seconds: the longest pause between those calls
MAX_WINDOW = 60.0  # seconds a chunk starts calls before it continues in a retry of itself

_KEY_WIDE = (RateLimited, TemporaryLockout)  # errors about the key, not about one call


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {kraken_error(exc)}"


@dataclass
class ChunkProgress:
    """What became of a chunk's ids; filled by the lanes on the event loop."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    finished: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # id, answer
    failed: list[dict[str, str]] = field(default_factory=list)
    handoffs: list[tuple[str, bool, float]] = field(default_factory=list)  # id, ambiguous, delay
    carried: list[tuple[str, bool]] = field(default_factory=list)  # id, ambiguous
    paused_until: float = 0.0  # loop time before which no lane calls Kraken
    stopped: AuthenticationError | None = None  # the key is refused: no more calls

    def carry(self, eid: str, ambiguous: bool) -> None:
        self.carried.append((eid, ambiguous))

    def finish(self, eid: str, outcome: str, confirmed_on_retry: bool = False) -> None:
        self.outcomes[outcome] += 1
        answer = {"outcome": outcome, "confirmed_on_retry": confirmed_on_retry, "via": "bulk"}
        self.finished.append((eid, answer))


async def cancel_many(
    client: Any,
    external_ids: Sequence[str],
    *,
    ambiguous: frozenset[str] = frozenset(),
    concurrency: int = 8,
    window: float = MAX_WINDOW,
    policy: RetryPolicy | None = None,
) -> ChunkProgress:
    """Cancel ``external_ids`` with at most ``concurrency`` calls in flight.

    Lanes stop starting calls after ``window`` seconds; what is left is ``carried``.
    ``ambiguous`` names ids whose earlier attempt may already have cancelled them.
    """
    loop = asyncio.get_running_loop()
    until = loop.time() + window
    progress = ChunkProgress()
    pending = iter(external_ids)
    policy = policy or RetryPolicy()

    async def lane() -> None:
        for eid in pending:
            if progress.stopped is not None:
                progress.failed.append({"external_id": eid, "error": error_text(progress.stopped)})
            elif not await _wait_for_key(progress, until):
                progress.carry(eid, eid in ambiguous)
            else:
                await _cancel_one(client, eid, eid in ambiguous, progress, until, policy)

    lanes = max(1, min(concurrency, len(external_ids)))
    await asyncio.gather(*(lane() for _ in range(lanes)))
    return progress


async def _wait_for_key(progress: ChunkProgress, until: float) -> bool:
    """Sit out a key-wide pause; ``False`` when it lasts past the window."""
    loop = asyncio.get_running_loop()
    while progress.paused_until > loop.time():
        if progress.paused_until >= until:
            return False
        await asyncio.sleep(progress.paused_until - loop.time())
    return loop.time() < until


async def _cancel_one(
    client: Any,
    eid: str,
    ambiguous: bool,
    progress: ChunkProgress,
    until: float,
    policy: RetryPolicy,
) -> None:
    loop = asyncio.get_running_loop()
    logs.bind(external_id=eid)  # this lane's records, until its next id
    attempt = 0
    while True:
        try:
            await client.cancel_request(eid)
        except PayRequestError as exc:
            outcome = pay_outcome(exc, ambiguous)
            if outcome is None:
                progress.failed.append({"external_id": eid, "error": error_text(exc)})
            else:
                progress.finish(eid, outcome.outcome, outcome.confirmed_on_retry)
            return
        except _KEY_WIDE as exc:  # the key must wait: every lane pauses, no attempt is spent
            metrics.retry(exc)  # after the pause, here or in the chunk's own retry
            pause = exc.retry_after if isinstance(exc, RateLimited) else None
            pause = pause if pause is not None else policy.delay(exc, 0)
            progress.paused_until = max(progress.paused_until, loop.time() + pause)
            if not await _wait_for_key(progress, until):
                progress.carry(eid, ambiguous)
                return
        except TransientError as exc:
            metrics.retry(exc)  # here, or in the cancel_request it is handed to
            attempt += 1
            ambiguous = ambiguous or exc.ambiguous
            delay = min(QUICK_MAX_DELAY, policy.delay(exc, attempt - 1))
            if attempt >= QUICK_ATTEMPTS or loop.time() + delay >= until:
                progress.handoffs.append((eid, ambiguous, delay))
                return
            await asyncio.sleep(delay)
        except AuthenticationError as exc:  # every later call would fail the same way
            progress.stopped = progress.stopped or exc
            progress.failed.append({"external_id": eid, "error": error_text(exc)})
            return
        except KrakenError as exc:
            progress.failed.append({"external_id": eid, "error": error_text(exc)})
            return
        else:
            progress.finish(eid, "cancelled")
            return
