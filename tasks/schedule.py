"""Scheduled cancellations, and beat's relay that sends whatever the ledger says is due.

``schedule_cancel(eid, at=...)`` or ``schedule_cancel(eid, in_=...)`` records the cancellation
in the ledger (:mod:`tasks.ledger`) as scheduled, its deadline the due time; scheduling it
again moves it, ``unschedule_cancel(eid)`` forgets it while it is still only scheduled, and
``cancel_request.delay(eid)`` supersedes it. These are plain functions a web process can call:
they need only the ``redis_url`` setting (of Celery's current app, or of ``app=``). Nothing is
a Celery ETA task: those sit in worker memory, and the Redis broker delivers them twice once
its visibility timeout runs out.

Every ``KRAKEN_SCHEDULE_INTERVAL`` seconds, beat sends ``dispatch_due`` (the entries of
:func:`tasks.beat_schedule`, which a project merges into its own beat schedule): the relay. It
claims, atomically and with a lease, every ledger entry whose deadline passed: scheduled ones
now due, and open ones that no worker has news of (a message lost in the web process, the
broker or a worker). Those with a task id are sent again as that ``cancel_request`` (the same
task id, so a caller waiting on it gets its answer); the rest go as one ``bulk_cancel`` per
batch. A relay that dies before sending leaves the lease to run out, and a later run sends
them: an id may be cancelled twice (the second answer, "already cancelled", is harmless),
never lost. Two beats by mistake claim each id once. Times are Redis's own: one clock for all.

``KRAKEN_PAY_SWEEP=module:function`` (``pay_sweep`` in the app's ``kraken_pay`` dict) names a
function of yours that returns ids to cancel (unpaid orders older than 30 minutes, say); beat
calls it every ``KRAKEN_PAY_SWEEP_INTERVAL`` seconds through ``sweep`` and bulk-cancels what
it returns. With Django (``DJANGO_SETTINGS_MODULE=shop.settings`` and
``KRAKEN_PAY_SWEEP=shop.sweeps:abandoned_orders`` for the workers)::

    # shop/sweeps.py
    from datetime import timedelta

    def abandoned_orders():
        import django
        django.setup()  # idempotent; Celery already ran it if DJANGO_SETTINGS_MODULE is set
        from django.db import transaction
        from django.utils import timezone
        from shop.models import Order

        cutoff = timezone.now() - timedelta(minutes=30)
        with transaction.atomic():
            orders = list(
                Order.objects.select_for_update(skip_locked=True)
                .filter(status="unpaid", created_at__lt=cutoff)
                .values_list("pk", "payment_external_id")
            )
            # Marked, so the next sweep does not return them again.
            Order.objects.filter(pk__in=[pk for pk, _ in orders]).update(status="cancelling")
        return [external_id for _, external_id in orders]
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import redis as redis_sync
from celery import shared_task

from kraken.pay import ConfigurationError, normalize_external_id
from tasks import logs
from tasks.base import KrakenPayTask, task_name
from tasks.bulk import bulk_signature, route_of
from tasks.checks import record_heartbeat
from tasks.ledger import Entry, Ledger, ledger_for
from tasks.settings import settings_for

__all__ = [
    "DISPATCH_BATCH",
    "MAX_AHEAD",
    "dispatch_due",
    "load_sweep",
    "register_relay",
    "relay",
    "schedule_cancel",
    "scheduled",
    "sweep",
    "unschedule_cancel",
]

log = logs.logger("tasks.schedule")

DISPATCH_BATCH = 10_000  # entries per claim, and ids per bulk_cancel


def _ledger(redis: redis_sync.Redis | None, app: Any) -> Ledger:
    if redis is None:
        return ledger_for(app)
    return Ledger(redis, settings_for(app).redis_prefix)


# The furthest ahead a cancellation may be due: a later time is a mistake (a unit, a year),
# and beyond datetime's range a stored score would break every reader of the schedule.
MAX_AHEAD = timedelta(days=365)


def _due_argument(at: datetime | None, in_: timedelta | float | None) -> tuple[str, float]:
    """``("at", unix time)`` or ``("in", seconds)``, refused before anything is stored."""
    if (at is None) == (in_ is None):
        raise TypeError("schedule_cancel: give exactly one of at= or in_=")
    limit = MAX_AHEAD.total_seconds()
    if at is not None:
        if not isinstance(at, datetime):
            raise TypeError(f"at: must be a datetime, not {type(at).__name__}")
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(
                "at: must be timezone-aware, e.g. datetime.now(timezone.utc) + ...; a naive "
                "datetime is refused because it could be in any time zone"
            )
        ahead = (at - datetime.now(timezone.utc)).total_seconds()
        if ahead > limit or at.timestamp() < 0:  # a past time is due now; before 1970, a bug
            raise ValueError(
                f"at: must be after 1970 and at most {MAX_AHEAD.days} days from now, not {at}"
            )
        return "at", at.timestamp()
    if isinstance(in_, timedelta):
        seconds = in_.total_seconds()
    elif isinstance(in_, (int, float)) and not isinstance(in_, bool):
        seconds = float(max(-1, min(in_, limit + 1)))  # an int may not fit in a float
    else:
        raise TypeError(f"in_: must be a timedelta or seconds, not {type(in_).__name__}")
    if not 0 <= seconds <= limit:  # NaN and infinities fail this too
        shown = str(in_) if isinstance(in_, timedelta) else repr(in_)
        raise ValueError(
            f"in_: must be 0 or more and at most {limit:.0f} seconds ({MAX_AHEAD.days} days), "
            f"not {shown:.40}"
        )
    return "in", seconds


def _as_datetime(score: float | str | bytes) -> datetime:
    return datetime.fromtimestamp(float(score), timezone.utc)


def schedule_cancel(
    external_id: Any,
    *,
    at: datetime | None = None,
    in_: timedelta | float | None = None,
    redis: redis_sync.Redis | None = None,
    app: Any = None,
) -> datetime:
    """Cancel ``external_id`` at ``at`` (timezone-aware) or ``in_`` from now; return when.

    Scheduling an id again moves it. The id and the time are validated before anything is
    stored (``InvalidExternalId``, ``ValueError``), and ``in_`` counts from Redis's clock, the
    one the relay reads. Raises :class:`tasks.ledger.NotRecorded` if Redis does not take it.
    """
    eid = normalize_external_id(external_id)
    mode, seconds = _due_argument(at, in_)
    when = {"at": seconds} if mode == "at" else {"within": seconds}
    return _as_datetime(_ledger(redis, app).ask([eid], scheduled=True, **when))


def unschedule_cancel(
    external_id: Any, *, redis: redis_sync.Redis | None = None, app: Any = None
) -> bool:
    """Forget the scheduled cancellation of ``external_id``; ``False`` if none was waiting
    (never scheduled, already due and sent, or superseded by ``cancel_request``)."""
    return _ledger(redis, app).unschedule(normalize_external_id(external_id))


def scheduled(
    *, limit: int | None = None, redis: redis_sync.Redis | None = None, app: Any = None
) -> list[tuple[str, datetime]]:
    """The ids still waiting for their due time, soonest first."""
    return [(eid, _as_datetime(due)) for eid, due in _ledger(redis, app).scheduled(limit)]


# ---------------------------------------------------------------- the relay


def relay(task: KrakenPayTask, ledger: Ledger, route: dict[str, Any]) -> int:
    """Send again every entry whose deadline passed; return how many were sent."""
    grace = task.settings.ledger_grace
    sent = 0
    while True:
        entries = ledger.claim_due(DISPATCH_BATCH, grace)
        if entries:
            sent += _send(task, ledger, entries, route)
        if len(entries) < DISPATCH_BATCH:
            return sent


def _send(task: KrakenPayTask, ledger: Ledger, entries: list[Entry], route: dict) -> int:
    singles = [e for e in entries if e.task_id]
    bulk_ids = [e.external_id for e in entries if not e.task_id]
    cancel_request = task.task("cancel_request")
    try:
        for entry in singles:
            cancel_request.apply_async(
                (entry.external_id,), task_id=entry.task_id, _kraken_pay_relayed=True, **route
            )
        if bulk_ids:
            options = route or {"queue": task.settings.queue}
            bulk = bulk_signature(task.app, bulk_ids, task.settings.bulk_chunk, **options)
            bulk.apply_async()
    except Exception as exc:  # the broker is down: due again at the next run
        ledger.hold([e.external_id for e in entries], 0.0, state="queued")
        log.error(
            "relay could not send count=%d error=%s",
            len(entries),
            type(exc).__name__,
            extra={"event": "relay.failed", "count": len(entries)},
        )
        return 0
    resent = sum(1 for e in entries if e.sends > 0)  # not scheduled: their message was lost
    log.info(
        "relay sent count=%d singles=%d bulk=%d",
        len(entries),
        len(singles),
        len(bulk_ids),
        extra={"event": "relay.sent", "count": len(entries), "resent": resent},
    )
    return len(entries)


_relays: list[Callable[[KrakenPayTask], int]] = []


def register_relay(relay: Callable[[KrakenPayTask], int]) -> None:
    """Run ``relay(task)`` in every ``dispatch_due`` as well (a store in the user's own
    database registers its own, so it needs no beat entry of its own). Idempotent."""
    if relay not in _relays:
        _relays.append(relay)


@shared_task(bind=True, base=KrakenPayTask, name=task_name("dispatch_due"), ignore_result=True)
def dispatch_due(self: KrakenPayTask) -> int:
    """Beat's relay: send what the ledger (and any registered store) says is due; return how
    many were sent."""
    ledger = ledger_for(self.app)
    record_heartbeat(ledger.redis, self.settings.redis_prefix)  # `kraken-pay check` reads it
    sent = relay(self, ledger, route_of(self.request))
    for extra in _relays:
        sent += extra(self)
    ledger.trim()
    return sent


# ---------------------------------------------------------------- the user's sweep


def load_sweep(target: str) -> Callable[[], Iterable[Any]]:
    """Import the ``module:function`` that ``KRAKEN_PAY_SWEEP`` names (a worker of the
    library's queue does so when it starts, so a typo stops it there)."""
    module_name, sep, function_name = target.partition(":")
    if not (module_name and sep and function_name):
        raise ConfigurationError(
            "KRAKEN_PAY_SWEEP: must be 'module:function', such as 'shop.sweeps:abandoned'"
        )
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"KRAKEN_PAY_SWEEP: cannot load {target!r}: {type(exc).__name__}"
        ) from None
    if not callable(function):
        raise ConfigurationError(f"KRAKEN_PAY_SWEEP: {target!r} is not callable")
    return function


@shared_task(bind=True, base=KrakenPayTask, name=task_name("sweep"), ignore_result=True)
def sweep(self: KrakenPayTask) -> int:
    """Call the user's sweep (``KRAKEN_PAY_SWEEP``) and bulk-cancel the ids it returns."""
    target = self.settings.pay_sweep
    if not target:
        return 0
    ids = list(load_sweep(target)() or ())
    bulk_cancel = self.task("bulk_cancel")
    bulk = bulk_cancel.apply_async((ids,), **route_of(self.request)) if ids else None
    log.info(
        "sweep %s returned count=%d bulk=%s",
        target,
        len(ids),
        bulk.id if bulk else "-",
        extra={"event": "schedule.swept", "count": len(ids)},
    )
    return len(ids)
