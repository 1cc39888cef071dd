"""``bulk_cancel(external_ids)``: cancel any number of payment requests under the shared budget.

``bulk_cancel.delay(ids).get()`` returns one JSON summary::

    {"total": 5, "accepted": 3, "duplicates": 1,
     "invalid": [{"position": 2, "value": "'not base64!'", "error": "external_id: ..."}],
     "outcomes": {"cancelled": 2, "already_cancelled": 0, "not_cancellable": 1, "not_found": 0},
     "failed": [{"external_id": "...", "error": "AuthenticationError: EAPI:Invalid key"}],
     "handed_off": 0}

How it stays cheap at any size:

* The caller's side validates and splits: ``delay`` sends one ``cancel_chunk`` message per
  ``KRAKEN_BULK_CHUNK`` ids (at most :data:`MAX_CHUNK`), joined by a chord to
  ``bulk_summary``. No message carries the whole list, and the chunk summaries the chord
  collects are counts plus the few ids that failed.
* A chunk runs on the worker's event loop: ``KRAKEN_BULK_CONCURRENCY`` lanes pull ids from
  one iterator, so a chunk never holds more coroutines than lanes.
* Per-call trouble (connection errors, 5xx, maintenance) is retried a few times at once;
  an id still failing is handed to a ``cancel_request`` task, which retries it durably.
  Key-wide trouble (the rate budget, a rate limit, a lockout) pauses the whole chunk. A
  chunk stops starting calls after a time window and continues in a retry of itself, so it
  never outlives the broker's visibility timeout, however slow the budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, chord, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from kraken.pay import InvalidExternalId, KrakenError, normalize_external_id
from kraken.pay.errors import (
    AuthenticationError,
    PayRequestError,
    RateLimited,
    TemporaryLockout,
    TransientError,
)
from tasks import logs, metrics, runtime
from tasks.base import KrakenPayTask, broker_visibility_timeout, task_name
from tasks.outcomes import OUTCOMES, kraken_error, pay_outcome
from tasks.retry import VISIBILITY_MARGIN, RetryPolicy
from tasks.settings import MAX_BULK_CHUNK, Settings

__all__ = [
    "MAX_CHUNK",
    "BulkCancelTask",
    "bulk_cancel",
    "bulk_summary",
    "cancel_chunk",
    "chunk_time_limits",
    "chunk_window",
    "split",
]

log = logs.logger("tasks.bulk")

MAX_CHUNK = MAX_BULK_CHUNK  # ids in one message, whatever KRAKEN_BULK_CHUNK says
QUICK_ATTEMPTS = 3  # calls for one id inside a chunk before it is handed to cancel_request
QUICK_MAX_DELAY = 1.0  # seconds: the longest pause between those calls
MAX_WINDOW = 60.0  # seconds a chunk starts calls before it continues in a retry of itself

_VALUE_EXCERPT = 40  # characters of a bad id's repr kept in the summary
_KEY_WIDE = (RateLimited, TemporaryLockout)  # errors about the key, not about one call


# ---------------------------------------------------------------- summaries


def empty_summary() -> dict[str, Any]:
    return {
        "total": 0,
        "accepted": 0,
        "duplicates": 0,
        "invalid": [],
        "outcomes": dict.fromkeys(OUTCOMES, 0),
        "failed": [],
        "handed_off": 0,
    }


def merge(summaries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One summary of many (chunk summaries have the same shape as the whole)."""
    total = empty_summary()
    for part in summaries:
        for name in ("total", "accepted", "duplicates", "handed_off"):
            total[name] += part[name]
        total["invalid"].extend(part["invalid"])
        total["failed"].extend(part["failed"])
        for outcome, count in part["outcomes"].items():
            total["outcomes"][outcome] = total["outcomes"].get(outcome, 0) + count
    total["invalid"].sort(key=lambda item: item["position"])
    return total


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {kraken_error(exc)}"


# ---------------------------------------------------------------- the caller's side


def _the_ids(args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> Iterable[Any]:
    """The ``external_ids`` argument, refused at once unless it is a collection of ids."""
    if args:
        value = args[0]
    elif kwargs and "external_ids" in kwargs:
        value = kwargs["external_ids"]
    else:
        raise TypeError("external_ids: is required: bulk_cancel(external_ids)")
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise TypeError(f"external_ids: must be a list of ids, not {type(value).__name__}")
    return value


def split(external_ids: Iterable[Any], chunk_size: int) -> Iterator[tuple[list[str], dict]]:
    """Yield ``(canonical ids, seed summary)`` for each ``chunk_size`` positions of the input.

    A bad id is reported in the seed by position and reason; a repeated id is counted once
    and cancelled once. The input is read once, so a generator or a query set will do.
    """
    seen: set[str] = set()
    ids: list[str] = []
    seed = empty_summary()
    position = -1
    for position, value in enumerate(external_ids):
        try:
            eid = normalize_external_id(value)
        except InvalidExternalId as exc:
            excerpt = repr(value)[:_VALUE_EXCERPT]
            seed["invalid"].append({"position": position, "value": excerpt, "error": str(exc)})
        else:
            if eid in seen:
                seed["duplicates"] += 1
            else:
                seen.add(eid)
                ids.append(eid)
        if (position + 1) % chunk_size == 0:
            yield ids, {**seed, "total": chunk_size, "accepted": len(ids)}
            ids, seed = [], empty_summary()
    rest = (position + 1) % chunk_size
    if rest or position < 0:  # the tail, or the one empty chunk of an empty input
        yield ids, {**seed, "total": rest, "accepted": len(ids)}


def bulk_signature(
    app: Celery, external_ids: Iterable[Any], chunk_size: int, **options: Any
) -> chord:
    """The chord that cancels ``external_ids`` on ``app``: one ``cancel_chunk`` per chunk,
    then a summary."""
    chunk_size = max(1, min(chunk_size, MAX_CHUNK))
    header = [
        app.signature(task_name("cancel_chunk"), (ids,), {"_summary": seed}, **options)
        for ids, seed in split(external_ids, chunk_size)
    ]
    body = app.signature(task_name("bulk_summary"), (), {}, **options)
    return chord(header, body, app=app)


class BulkCancelTask(KrakenPayTask):
    """Splits on the caller's side: ``delay(ids)`` sends the chunks and the chord, never one
    message with every id, and returns the result of the summary. A non-list argument is
    refused with ``TypeError`` before anything is sent."""

    def apply_async(self, args=None, kwargs=None, task_id=None, **options: Any):  # type: ignore[override]
        external_ids = _the_ids(args, kwargs)
        if self.app.conf.task_always_eager:
            return super().apply_async((list(external_ids),), {}, task_id=task_id, **options)
        # The chunks and the summary (which a worker sends when the chord ends) go where
        # this call says, else to the library's queue.
        route = {"queue": options.pop("queue", None) or self.settings.queue}
        signature = bulk_signature(self.app, external_ids, self.settings.bulk_chunk, **route)
        return signature.apply_async(task_id=task_id, **options)


@shared_task(bind=True, base=BulkCancelTask, name=task_name("bulk_cancel"))
def bulk_cancel(self: BulkCancelTask, external_ids: list[Any]) -> dict[str, Any]:
    """Cancel every id of ``external_ids``; the result is the summary of the module docstring.

    Reached only when a message names this task directly (``send_task``, eager mode):
    ``delay`` and ``apply_async`` send the chunks themselves.
    """
    ids = _the_ids((external_ids,), None)
    route = route_of(self.request) or {"queue": self.settings.queue}
    return self.replace(bulk_signature(self.app, ids, self.settings.bulk_chunk, **route))


@shared_task(base=KrakenPayTask, name=task_name("bulk_summary"))
def bulk_summary(chunk_summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The chord's callback: the chunks' summaries added up."""
    summary = merge(chunk_summaries)
    log.info(
        "bulk_cancel summary total=%d accepted=%d invalid=%d failed=%d handed_off=%d outcomes=%s",
        summary["total"],
        summary["accepted"],
        len(summary["invalid"]),
        len(summary["failed"]),
        summary["handed_off"],
        summary["outcomes"],
        extra={"event": "bulk_cancel.summary", **summary["outcomes"]},
    )
    return summary


# ---------------------------------------------------------------- one chunk, on the event loop


@dataclass
class ChunkProgress:
    """What became of a chunk's ids; filled by the lanes on the event loop."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    failed: list[dict[str, str]] = field(default_factory=list)
    handoffs: list[tuple[str, bool, float]] = field(default_factory=list)  # id, ambiguous, delay
    carried: list[tuple[str, bool]] = field(default_factory=list)  # id, ambiguous
    paused_until: float = 0.0  # loop time before which no lane calls Kraken
    stopped: AuthenticationError | None = None  # the key is refused: no more calls

    def carry(self, eid: str, ambiguous: bool) -> None:
        self.carried.append((eid, ambiguous))


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
                progress.failed.append({"external_id": eid, "error": _error_text(progress.stopped)})
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
                progress.failed.append({"external_id": eid, "error": _error_text(exc)})
            else:
                progress.outcomes[outcome.outcome] += 1
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
            progress.failed.append({"external_id": eid, "error": _error_text(exc)})
            return
        except KrakenError as exc:
            progress.failed.append({"external_id": eid, "error": _error_text(exc)})
            return
        else:
            progress.outcomes["cancelled"] += 1
            return


# ---------------------------------------------------------------- the chunk task


def _count(progress: ChunkProgress) -> None:
    for outcome, count in progress.outcomes.items():
        metrics.cancellation(outcome, count)
    metrics.cancellation("failed", len(progress.failed))


def chunk_window(settings: Settings, visibility_timeout: float | None) -> float:
    """Seconds a chunk starts calls for: at most MAX_WINDOW, and short enough that the chunk,
    its time limits and a retry countdown all fit in the broker's visibility timeout
    (``None``: the broker has none, as RabbitMQ)."""
    if visibility_timeout is None:
        return MAX_WINDOW
    _, hard = settings.task_time_limits()
    spare = visibility_timeout - settings.retry_max_delay - VISIBILITY_MARGIN - hard
    return max(1.0, min(MAX_WINDOW, spare))


def chunk_time_limits(settings: Settings, visibility_timeout: float | None) -> tuple[float, float]:
    """A chunk's (soft, hard) limits: a call's, plus the window in which it starts calls."""
    soft, hard = settings.task_time_limits()
    window = chunk_window(settings, visibility_timeout)
    return soft + window, hard + window


def route_of(request: Any) -> dict[str, Any]:
    """Options that send new work to the queue the current task came from.

    Celery names a queue's routing key after the queue, unless ``task_routes`` says
    otherwise; work spawned by a task (hand-offs, a dispatcher's bulk) follows it there.
    """
    routing_key = (request.delivery_info or {}).get("routing_key")
    return {"queue": routing_key} if routing_key else {}


def _hand_off(
    task: KrakenPayTask, handoffs: Iterable[tuple[str, bool, float]], route: Mapping[str, Any]
) -> int:
    """Give ids that still fail to ``cancel_request`` (on the same app), whose retries are
    durable."""
    cancel_request = task.task("cancel_request")
    count = 0
    now = time.time()
    for eid, ambiguous, delay in handoffs:
        state = {"first_at": now, "ambiguous": ambiguous}
        cancel_request.apply_async((eid,), {"_retry": state}, countdown=delay, **route)
        count += 1
    return count


@shared_task(
    bind=True,
    base=KrakenPayTask,
    name=task_name("cancel_chunk"),
    max_retries=None,  # a continuation is progress, not a failure; see the deadline below
)
def cancel_chunk(
    self: KrakenPayTask,
    external_ids: list[str],
    _summary: dict[str, Any] | None = None,
    _ambiguous: list[str] | None = None,
    _first_at: float | None = None,
) -> dict[str, Any]:
    """Cancel one chunk's ids (canonical already); return its part of the summary.

    ``_summary`` carries what the chunk knows so far (its invalid ids, then the outcomes of
    earlier windows); ``_ambiguous`` the ids whose earlier attempt may have gone through.
    """
    settings = self.settings
    policy = RetryPolicy.from_settings(settings)
    count = len(external_ids)
    summary = merge([_summary or {**empty_summary(), "total": count, "accepted": count}])
    first_at = _first_at or time.time()
    if (self.request.delivery_info or {}).get("redelivered"):
        ambiguous = frozenset(external_ids)  # our earlier run may have sent any of them
    else:
        ambiguous = frozenset(_ambiguous or ())
    window = chunk_window(settings, broker_visibility_timeout(self.app))
    work = cancel_many(
        runtime.client(settings),
        external_ids,
        ambiguous=ambiguous,
        concurrency=settings.bulk_concurrency,
        window=window,
        policy=policy,
    )
    try:
        progress = runtime.run(work, window + settings.attempt_timeout)
    except (TimeoutError, SoftTimeLimitExceeded):
        # Results of this window are lost with the coroutine: run it all again, and read
        # "already cancelled" as our own work.
        raise self.retry(
            args=(external_ids,),
            kwargs={"_summary": _summary, "_ambiguous": external_ids, "_first_at": first_at},
            countdown=0,
        ) from None

    summary = merge([summary, {**empty_summary(), "outcomes": progress.outcomes}])
    _count(progress)
    summary["failed"].extend(progress.failed)
    route = route_of(self.request)
    handoffs = list(progress.handoffs)
    carried = progress.carried
    if carried and time.time() - first_at >= policy.deadline:
        handoffs += [(eid, amb, 0.0) for eid, amb in carried]
        carried = []
    summary["handed_off"] += _hand_off(self, handoffs, route)
    if carried:
        # asyncio's loop.time() is time.monotonic(): paused_until is on that clock.
        countdown = min(policy.max_delay, max(0.0, progress.paused_until - time.monotonic()))
        log.info(
            "cancel_chunk continues later ids_left=%d countdown=%.3f",
            len(carried),
            countdown,
            extra={"event": "cancel_chunk.continue", "ids_left": len(carried)},
        )
        raise self.retry(
            args=([eid for eid, _ in carried],),
            kwargs={
                "_summary": summary,
                "_ambiguous": [eid for eid, amb in carried if amb],
                "_first_at": first_at,
            },
            countdown=countdown,
        )
    return summary
