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

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from kraken.pay import InvalidExternalId, KrakenError, normalize_external_id
from kraken.pay.errors import PayRequestError, TransportError
from tasks import logs, metrics, runtime
from tasks.base import KrakenPayTask, task_name
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
    """Validates the external id when the task is queued: a bad id raises
    :class:`kraken.InvalidExternalId` from ``delay``/``apply_async`` and nothing is sent, and
    the message carries the canonical id (a UUID becomes its base64 form)."""

    def apply_async(self, args=None, kwargs=None, *a: Any, **options: Any):  # type: ignore[override]
        args, kwargs = _canonical_arguments(args, kwargs)
        return super().apply_async(args, kwargs, *a, **options)


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
def cancel_request(
    self: CancelRequestTask, external_id: Any, _retry: dict[str, Any] | None = None
) -> dict:
    """Cancel the Kraken Pay payment request ``external_id``; see the module's docstring.

    ``_retry`` is the task's own state across retries (JSON): when the first attempt began,
    and whether an earlier attempt may have reached Kraken without our seeing the answer.
    """
    attempt = self.request.retries + 1
    state = dict(_retry or {})
    first_at = float(state.get("first_at") or time.time())
    # A redelivered message (its worker died) may have sent its request already.
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    ambiguous_before = bool(state.get("ambiguous")) or redelivered
    try:
        eid = normalize_external_id(external_id)
    except InvalidExternalId as exc:
        _fail(str(external_id)[:40], attempt, exc, "invalid_argument")
        raise

    logs.bind(task_id=self.request.id, external_id=eid)
    settings = self.settings
    try:
        call = runtime.client(settings).cancel_request(eid)
        result = runtime.run(call, settings.attempt_timeout)
    except PayRequestError as exc:
        outcome = pay_outcome(exc, ambiguous_before)
        if outcome is None:
            _fail(eid, attempt, exc, "terminal")
            raise
        _log_attempt(eid, attempt, None, None)
        return _result(
            eid,
            outcome.outcome,
            attempt,
            error=exc.to_dict(),
            confirmed_on_retry=outcome.confirmed_on_retry,
        )
    except (KrakenError, TimeoutError, SoftTimeLimitExceeded) as caught:
        exc: BaseException = caught
        if not isinstance(exc, KrakenError):  # our own wait ran out: the call may have gone out
            exc = TransportError(f"attempt interrupted: {type(caught).__name__}", ambiguous=True)
        countdown = RetryPolicy.from_settings(settings).decide(exc, attempt, time.time() - first_at)
        if countdown is None:
            if not is_transient(exc):
                _fail(eid, attempt, exc, "terminal")
                raise exc from None
            _fail(eid, attempt, exc, "retries_exhausted")
            last = exc.to_dict() if isinstance(exc, KrakenError) else {}
            raise RetriesExhausted(eid, attempt, last) from None
        _log_attempt(eid, attempt, exc, countdown)
        metrics.retry(exc)
        state = {
            "first_at": first_at,
            "ambiguous": ambiguous_before or bool(getattr(exc, "ambiguous", False)),
        }
        raise self.retry(
            args=(eid,), kwargs={"_retry": state}, exc=exc, countdown=countdown
        ) from None

    _log_attempt(eid, attempt, None, None)
    return _result(eid, "cancelled", attempt, result=result)
