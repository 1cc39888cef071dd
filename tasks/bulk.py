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

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from celery import Celery, chord, shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.utils import uuid

from kraken.pay import InvalidExternalId, normalize_external_id
from tasks import runtime
from tasks.base import KrakenPayTask, broker_visibility_timeout, task_name
from tasks.lanes import MAX_WINDOW, ChunkProgress, cancel_many, error_text
from tasks.ledger import Entry, Ledger, ledger_for
from tasks.outcomes import OUTCOMES
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

log = logging.getLogger("tasks.bulk")

MAX_CHUNK = MAX_BULK_CHUNK  # ids in one message, whatever KRAKEN_BULK_CHUNK says

_VALUE_EXCERPT = 40  # characters of a bad id's repr kept in the summary


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
    return _chord(app, split(external_ids, max(1, min(chunk_size, MAX_CHUNK))), **options)


def _chord(app: Celery, chunks: Iterable[tuple[list[str], dict]], **options: Any) -> chord:
    header = [
        app.signature(task_name("cancel_chunk"), (ids,), {"_summary": seed}, **options)
        for ids, seed in chunks
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
        chunk_size = max(1, min(self.settings.bulk_chunk, MAX_CHUNK))
        chunks = list(split(external_ids, chunk_size))
        ledger = ledger_for(self.app)
        for ids, _ in chunks:  # every id is recorded before anything is sent
            if ids:
                ledger.ask(ids, within=self.settings.ledger_grace)
        signature = _chord(self.app, chunks, **route)
        task_id = task_id or uuid()  # the summary's id, known even if the send fails
        try:
            return signature.apply_async(task_id=task_id, **options)
        except Exception as exc:  # recorded: the relay sends them at its next run
            _publish_failed(ledger, [eid for ids, _ in chunks for eid in ids], exc)
            return self.AsyncResult(task_id)


def _publish_failed(ledger: Ledger, ids: list[str], exc: BaseException) -> None:
    log.warning(
        "bulk_cancel not published, recorded for the relay count=%d error=%s",
        len(ids),
        type(exc).__name__,
        extra={"event": "bulk_cancel.unpublished", "count": len(ids)},
    )
    try:
        ledger.hold(ids, 0.0, state="queued")
    except Exception as again:  # still open: each comes due after its grace anyway
        log.warning("ledger unavailable: %s", type(again).__name__)


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


# ---------------------------------------------------------------- the chunk task


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
    ledger = ledger_for(task.app)
    count = 0
    for eid, ambiguous, delay in handoffs:
        # Its ambiguity goes through the ledger, which the cancel_request task reads.
        ledger.hold([eid], delay + _hold(task.settings), ambiguous=ambiguous)
        cancel_request.apply_async((eid,), countdown=delay, _kraken_pay_relayed=True, **route)
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
    external_ids: list[Any],
    _summary: dict[str, Any] | None = None,
    _ambiguous: Any = None,
    _first_at: Any = None,
) -> dict[str, Any]:
    """Cancel one chunk's ids; return its part of the summary.

    ``_summary`` carries what the chunk knows so far (its invalid ids, then the outcomes of
    earlier windows). Which ids an earlier attempt may have cancelled unseen, and when the
    first attempt began, live in the ledger, not in the message (``_ambiguous`` and
    ``_first_at``, which older messages carried, are ignored). An id that is not valid is
    reported as failed for itself alone.
    """
    settings = self.settings
    policy = RetryPolicy.from_settings(settings)
    ids, bad = _valid(external_ids)
    count = len(external_ids)
    summary = merge([_summary or {**empty_summary(), "total": count, "accepted": count}])
    summary["failed"].extend(bad)
    window = chunk_window(settings, broker_visibility_timeout(self.app))
    ledger = ledger_for(self.app)
    begun = _begin(ledger, ids, window + _hold(settings))
    known = {eid: record for eid, record in begun.items() if isinstance(record, dict)}
    for record in known.values():  # answered before: counted, not called again
        outcome = record.get("outcome")
        summary["outcomes"][outcome] = summary["outcomes"].get(outcome, 0) + 1
    entries = [entry for entry in begun.values() if isinstance(entry, Entry)]
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    ambiguous = frozenset(e.external_id for e in entries if e.ambiguous or redelivered)
    first_at = min((e.first_at for e in entries if e.first_at), default=time.time())
    work = cancel_many(
        runtime.client(settings),
        [e.external_id for e in entries],
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
        ledger.hold([e.external_id for e in entries], window + _hold(settings), ambiguous=True)
        _retry_or_requeue(self, ids, {"_summary": _summary}, 0.0)

    summary = merge([summary, {**empty_summary(), "outcomes": progress.outcomes}])
    summary["failed"].extend(progress.failed)
    _settle(ledger, progress, attempts=max((e.attempts for e in entries), default=1))
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
        for eid, amb in carried:
            ledger.hold([eid], countdown + window + _hold(settings), ambiguous=amb or None)
        left = [eid for eid, _ in carried]
        _retry_or_requeue(self, left, {"_summary": summary}, countdown)
    return summary


def _valid(external_ids: Sequence[Any]) -> tuple[list[str], list[dict[str, str]]]:
    ids: list[str] = []
    bad: list[dict[str, str]] = []
    for value in external_ids:
        try:
            ids.append(normalize_external_id(value))
        except InvalidExternalId as exc:
            bad.append({"external_id": repr(value)[:_VALUE_EXCERPT], "error": error_text(exc)})
    return ids, bad


def _hold(settings: Settings) -> float:
    """Seconds past a chunk's window by which the ledger should have its news."""
    _, hard = settings.task_time_limits()
    return hard + settings.ledger_grace


def _begin(ledger: Ledger, ids: list[str], hold: float) -> dict[str, Entry | dict]:
    try:
        return ledger.begin(ids, hold) if ids else {}
    except Exception as exc:  # no ledger: go on; nothing here depends on it to be correct
        log.warning("ledger unavailable: %s", type(exc).__name__)
        return {eid: Entry(eid, "running") for eid in ids}


def _settle(ledger: Ledger, progress: ChunkProgress, attempts: int) -> None:
    """Close the ids Kraken answered, and those that failed for good."""
    records = [(eid, {**answer, "attempts": attempts}) for eid, answer in progress.finished]
    records += [
        (item["external_id"], {"outcome": "failed", "error": item["error"], "attempts": attempts})
        for item in progress.failed
    ]
    try:
        ledger.close(records)
    except Exception as exc:  # still open: the relay sends them again, harmlessly
        log.warning("ledger unavailable, outcomes not recorded: %s", type(exc).__name__)


def _retry_or_requeue(task: KrakenPayTask, ids: list[str], kwargs: dict, countdown: float):
    """Continue in a retry; if it cannot be published, leave the message to be delivered
    again instead of dropping it (the ledger has every id anyway)."""
    try:
        raise task.retry(args=(ids,), kwargs=kwargs, countdown=countdown)
    except Reject as rejected:
        raise Reject(rejected.reason, requeue=True) from None
    except SoftTimeLimitExceeded:
        raise Reject("soft time limit during the retry", requeue=True) from None
