"""``cancel_request(external_id)``: cancel one Kraken Pay payment request, reliably.

The result is a JSON object::

    {"external_id": "...", "outcome": "cancelled" | "already_cancelled" | "not_cancellable"
     | "not_found", "attempts": 1, "confirmed_on_retry": false,
     "result": <Kraken's result, or null>, "error": <Kraken's error about the request, or null>}

What Kraken says about the payment request is an outcome, not a failure. The task fails only
when the system could not do its job: bad credentials or arguments (at once), or transient
errors until the retry policy gave up (:class:`tasks.retry.RetriesExhausted`). A failure is an
ordinary task failure, so error trackers report it, and it is logged once, in a line whose
message names the error class (trackers group by it), with the external id and Kraken's
error in the record's fields.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from celery import shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.utils import uuid

from kraken.pay import (
    InvalidExternalId,
    KrakenError,
    PayRequestError,
    TransportError,
    normalize_external_id,
)
from tasks import logs, metrics, runtime
from tasks.base import KrakenPayTask, task_name
from tasks.ledger import Entry, Ledger, ledger_for
from tasks.outcomes import OUTCOMES, kraken_error, pay_outcome
from tasks.retry import RetriesExhausted, RetryPolicy, is_transient

__all__ = ["OUTCOMES", "CancelRequestTask", "cancel_request"]

log = logs.logger("tasks.cancel")


def _canonical_arguments(
    args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The same arguments with the external id in canonical form; InvalidExternalId if bad."""
    args = tuple(args or ())
    kwargs = dict(kwargs or {})
    if args:
        args = (normalize_external_id(args[0]), *args[1:])
    elif "external_id" in kwargs:
        kwargs["external_id"] = normalize_external_id(kwargs["external_id"])
    else:
        raise InvalidExternalId("is required: cancel_request(external_id)")
    return args, kwargs


class CancelRequestTask(KrakenPayTask):
    """Records the cancellation in the ledger, then sends it.

    The external id is validated first: a bad id raises :class:`kraken.pay.InvalidExternalId`
    from ``delay``/``apply_async`` and nothing is recorded or sent; the message carries the
    canonical id (a UUID becomes its base64 form). ``delay`` returns once the cancellation is
    recorded: if Redis does not take it, :class:`tasks.ledger.NotRecorded` is raised and
    nothing is sent; a publish that fails after that is logged, not raised, and beat's relay
    sends it (with the same task id, so the returned result still gets its answer).
    """

    def apply_async(self, args=None, kwargs=None, task_id=None, **options: Any):  # type: ignore[override]
        args, kwargs = _canonical_arguments(args, kwargs)
        relayed = options.pop("_kraken_pay_relayed", False)
        eager = self.app.conf.task_always_eager  # runs here and now: nothing to relay
        if options.get("retries") or relayed or eager:  # a retry or a re-send keeps its entry
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        eid = args[0] if args else kwargs["external_id"]
        task_id = task_id or uuid()
        ledger = ledger_for(self.app)
        ledger.ask([eid], within=self.settings.ledger_grace, task_id=task_id)
        try:
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        except Exception as exc:  # recorded: the relay sends it at its next run
            _publish_failed(ledger, eid, task_id, exc)
            return self.AsyncResult(task_id)


def _publish_failed(ledger: Ledger, eid: str, task_id: str, exc: BaseException) -> None:
    log.warning(
        "cancel_request not published, recorded for the relay external_id=%s error=%s",
        eid,
        type(exc).__name__,
        extra={"event": "cancel_request.unpublished", "external_id": eid, "task_id": task_id},
    )
    with contextlib.suppress(redis.RedisError):
        ledger.hold([eid], 0.0, state="queued")


def _log_attempt(eid: str, attempt: int, error: BaseException | None, delay: float | None) -> None:
    error_class = type(error).__name__ if error is not None else "-"
    ambiguous = bool(getattr(error, "ambiguous", False))
    log.log(
        logging.WARNING if error is not None else logging.INFO,
        "cancel_request attempt external_id=%s attempt=%d error=%s ambiguous=%s delay=%s",
        eid,
        attempt,
        error_class,
        str(ambiguous).lower(),
        f"{delay:.3f}" if delay is not None else "-",
        extra={
            "event": "cancel_request.attempt",
            "external_id": eid,
            "attempt": attempt,
            "error_class": None if error is None else error_class,
            "ambiguous": ambiguous,
            "delay": delay,
        },
    )


def _result(
    eid: str,
    outcome: str,
    attempts: int,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
    confirmed_on_retry: bool = False,
) -> dict[str, Any]:
    metrics.cancellation(outcome)
    log.info(
        "cancel_request outcome external_id=%s outcome=%s attempts=%d confirmed_on_retry=%s",
        eid,
        outcome,
        attempts,
        str(confirmed_on_retry).lower(),
        extra={
            "event": "cancel_request.outcome",
            "external_id": eid,
            "outcome": outcome,
            "attempts": attempts,
            "confirmed_on_retry": confirmed_on_retry,
        },
    )
    return {
        "external_id": eid,
        "outcome": outcome,
        "attempts": attempts,
        "confirmed_on_retry": confirmed_on_retry,
        "result": result,
        "error": error,
    }


def _fail(eid: str, attempt: int, exc: BaseException, why: str) -> None:
    # The message template names the class, so trackers group failures by class; the
    # varying parts are arguments and fields.
    metrics.cancellation("failed")
    log.error(
        f"cancel_request failed: {type(exc).__name__} ({why})"
        " external_id=%s attempt=%d kraken_error=%r",
        eid,
        attempt,
        kraken_error(exc),
        extra={
            "event": "cancel_request.failed",
            "external_id": eid,
            "attempt": attempt,
            "error_class": type(exc).__name__,
            "kraken_error": kraken_error(exc),
            "reason": why,
        },
    )


@shared_task(
    bind=True,
    base=CancelRequestTask,
    name=task_name("cancel_request"),
    max_retries=None,  # tasks/retry.py decides, not Celery's counter
)
def cancel_request(self: CancelRequestTask, external_id: Any, _retry: Any = None) -> dict:
    """Cancel the Kraken Pay payment request ``external_id``; see the module's docstring.

    The task's state across retries (when the first attempt began, whether an earlier one may
    have reached Kraken unseen) lives in the ledger, never in the message: ``_retry``, which
    older messages carried, is ignored, so a forged one cannot turn an answer into another.
    """
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    try:
        eid = normalize_external_id(external_id)
    except InvalidExternalId as exc:
        _fail(str(external_id)[:40], self.request.retries + 1, exc, "invalid_argument")
        raise

    logs.bind(task_id=self.request.id, external_id=eid)
    settings = self.settings
    ledger = ledger_for(self.app)
    begun = _begin(ledger, eid, self.request.id, _hold(settings, 0.0))
    if isinstance(begun, dict):  # closed already: a repeated message, or a re-send
        return _known(eid, begun)
    attempt = max(begun.attempts, self.request.retries + 1)
    first_at = begun.first_at or time.time()
    # A redelivered message (its worker died) may have sent its request already.
    ambiguous_before = begun.ambiguous or redelivered
    try:
        call = runtime.client(settings).cancel_request(eid)
        result = runtime.run(call, settings.attempt_timeout)
    except PayRequestError as exc:
        outcome = pay_outcome(exc, ambiguous_before)
        if outcome is None:
            _fail(eid, attempt, exc, "terminal")
            _close(ledger, eid, _failure(exc, attempt, "terminal"))
            raise
        _log_attempt(eid, attempt, None, None)
        return _close(
            ledger,
            eid,
            _result(
                eid,
                outcome.outcome,
                attempt,
                error=exc.to_dict(),
                confirmed_on_retry=outcome.confirmed_on_retry,
            ),
        )
    except (KrakenError, TimeoutError, SoftTimeLimitExceeded) as caught:
        exc: BaseException = caught
        if not isinstance(exc, KrakenError):  # our own wait ran out: the call may have gone out
            exc = TransportError(f"attempt interrupted: {type(caught).__name__}", ambiguous=True)
        countdown = RetryPolicy.from_settings(settings).decide(exc, attempt, time.time() - first_at)
        if countdown is None:
            reason = "retries_exhausted" if is_transient(exc) else "terminal"
            _fail(eid, attempt, exc, reason)
            _close(ledger, eid, _failure(exc, attempt, reason))
            if reason == "terminal":
                raise exc from None
            last = exc.to_dict() if isinstance(exc, KrakenError) else {}
            raise RetriesExhausted(eid, attempt, last) from None
        _log_attempt(eid, attempt, exc, countdown)
        metrics.retry(exc)
        ambiguous = ambiguous_before or bool(getattr(exc, "ambiguous", False))
        _hold_for_retry(ledger, eid, _hold(settings, countdown), ambiguous, type(exc).__name__)
        _retry_or_requeue(self, eid, exc, countdown)

    _log_attempt(eid, attempt, None, None)
    return _close(ledger, eid, _result(eid, "cancelled", attempt, result=result))


def _hold(settings: Any, countdown: float) -> float:
    """Seconds until the ledger should have news of an attempt that starts ``countdown``
    from now: the attempt's own limit and a margin (past it, the relay sends it again)."""
    _, hard = settings.task_time_limits()
    return countdown + hard + settings.ledger_grace


def _begin(ledger: Ledger, eid: str, task_id: str | None, hold: float) -> Entry | dict:
    try:
        return ledger.begin([eid], hold, task_id)[eid]
    except redis.RedisError as exc:  # no ledger: go on; the relay cannot help this one
        log.warning(
            "ledger unavailable, attempt not recorded external_id=%s error=%s",
            eid,
            type(exc).__name__,
            extra={"event": "ledger.unavailable", "external_id": eid},
        )
        return Entry(eid, "running")


def _hold_for_retry(ledger: Ledger, eid: str, hold: float, ambiguous: bool, error: str) -> None:
    with contextlib.suppress(redis.RedisError):  # the retry message carries on regardless
        ledger.hold([eid], hold, state="waiting", ambiguous=ambiguous, last_error=error)


def _retry_or_requeue(task: CancelRequestTask, eid: str, exc: BaseException, countdown: float):
    """Retry later; if the retry cannot be published (the broker is down, or a time limit
    lands mid-publish) leave the message to be delivered again instead of dropping it."""
    try:
        raise task.retry(args=(eid,), kwargs={}, exc=exc, countdown=countdown)
    except Reject as rejected:
        raise Reject(rejected.reason, requeue=True) from None
    except SoftTimeLimitExceeded:
        raise Reject("soft time limit during the retry", requeue=True) from None


def _close(ledger: Ledger, eid: str, record: dict[str, Any]) -> dict[str, Any]:
    """Kraken's final answer (or a failure for good): the entry closes. ``record`` is
    returned, the task's result."""
    try:
        ledger.close([(eid, record)])
    except redis.RedisError as exc:  # still open: the relay sends it again, harmlessly
        log.warning(
            "ledger unavailable, outcome not recorded external_id=%s error=%s",
            eid,
            type(exc).__name__,
            extra={"event": "ledger.unavailable", "external_id": eid},
        )
    return record


def _failure(exc: BaseException, attempt: int, reason: str) -> dict[str, Any]:
    return {
        "outcome": "failed",
        "reason": reason,
        "error_class": type(exc).__name__,
        "kraken_error": kraken_error(exc),
        "attempts": attempt,
    }


def _known(eid: str, record: dict[str, Any]) -> dict[str, Any]:
    """The answer of a cancellation the ledger already closed; Kraken is not called again."""
    log.info(
        "cancel_request already answered external_id=%s outcome=%s",
        eid,
        record.get("outcome"),
        extra={"event": "cancel_request.known", "external_id": eid},
    )
    keys = ("external_id", "outcome", "attempts", "confirmed_on_retry", "result", "error")
    return {key: record.get(key) for key in keys} | {"external_id": eid}
