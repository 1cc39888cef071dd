"""Scheduled cancellations, kept durably in Redis and dispatched in bulk by a beat task.

``schedule_cancel(eid, at=...)`` or ``schedule_cancel(eid, in_=...)`` puts the id in one
sorted set, scored by its due time; scheduling it again moves it, ``unschedule_cancel(eid)``
removes it. Both are plain functions that a web process can call: they need only the
``redis_url`` setting (of Celery's current app, or of ``app=``). Nothing is a Celery ETA
task: those sit in worker memory, and the Redis broker delivers them twice once its
visibility timeout runs out.

Every ``KRAKEN_SCHEDULE_INTERVAL`` seconds, beat sends ``dispatch_due`` (the entries of
:func:`tasks.beat_schedule`, which a project merges into its own beat schedule). One Lua script
claims the due ids atomically, moving them to a second sorted set scored by a lease's end;
the task sends them to ``bulk_cancel`` and only then drops them from that set. A worker
that dies in between leaves the lease to expire, and a later run sends the ids again: an id
may be cancelled twice (the second answer, "already cancelled", is harmless), never lost.
Two beats by mistake send twice as many ``dispatch_due``; the atomic claim still hands each
id to one of them. Due times are compared with Redis's own ``TIME``: one clock for all hosts.

``KRAKEN_PAY_SWEEP=module:function`` (``pay_sweep`` in the app's ``kraken_pay`` dict) names a
function of yours that returns ids to cancel (unpaid orders older than 30 minutes, say); beat
calls it every
``KRAKEN_PAY_SWEEP_INTERVAL`` seconds through ``sweep`` and bulk-cancels what it returns.
With Django (``DJANGO_SETTINGS_MODULE=shop.settings`` and
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
import os
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import redis as redis_sync
from celery import shared_task

from kraken.pay import normalize_external_id
from kraken.pay.errors import ConfigurationError
from tasks import logs
from tasks.base import KrakenPayTask, task_name
from tasks.bulk import route_of
from tasks.checks import record_heartbeat
from tasks.settings import settings_for

__all__ = [
    "DISPATCHING_KEY",
    "SCHEDULE_KEY",
    "claim_due",
    "dispatch_due",
    "load_sweep",
    "release",
    "schedule_cancel",
    "scheduled",
    "sweep",
    "unschedule_cancel",
]

log = logs.logger("tasks.schedule")

SCHEDULE_KEY = "kraken:scheduled"  # id -> due time (unix seconds)
DISPATCHING_KEY = "kraken:scheduled:dispatching"  # id -> end of the claim's lease
LEASE = 60.0  # seconds a claim may take to reach the broker before another run takes it over
DISPATCH_BATCH = 10_000  # ids per claim, and per bulk_cancel

# Times travel as decimal strings with microseconds: Lua would print a float with 14
# significant digits, which rounds a unix time to a tenth of a millisecond.

# KEYS: scheduled, dispatching. ARGV: id, "at" or "in", seconds. Returns the due time.
_SCHEDULE = """
local due = tonumber(ARGV[3])
if ARGV[2] == 'in' then
  local t = redis.call('TIME')
  due = tonumber(t[1]) + tonumber(t[2]) / 1000000 + due
end
local score = string.format('%.6f', due)
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return score
"""

# KEYS: scheduled, dispatching. ARGV: id. Returns 1 if the id was waiting, else 0.
_UNSCHEDULE = """
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

# KEYS: scheduled, dispatching. ARGV: lease seconds, limit. Claims expired leases first
# (their dispatcher died), then due ids; every claimed id gets a fresh lease.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_s = string.format('%.6f', now)
local lease_end = string.format('%.6f', now + tonumber(ARGV[1]))
local limit = tonumber(ARGV[2])
local claimed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_s, 'LIMIT', 0, limit)
if #claimed < limit then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_s, 'LIMIT', 0, limit - #claimed)
  for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[1], id)
    claimed[#claimed + 1] = id
  end
end
for _, id in ipairs(claimed) do
  redis.call('ZADD', KEYS[2], lease_end, id)
end
return claimed
"""

_clients: dict[tuple[int, str], redis_sync.Redis] = {}
_clients_lock = threading.Lock()


def _default_redis(app: Any = None) -> redis_sync.Redis:
    """One client per process for the app's ``redis_url`` (a forked child makes its own)."""
    key = (os.getpid(), settings_for(app).redis_url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = redis_sync.Redis.from_url(key[1])
        return client


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

    Scheduling an id again moves it. The id is validated now (``InvalidExternalId``), and
    ``in_`` counts from Redis's clock, the one the dispatcher reads.
    """
    eid = normalize_external_id(external_id)
    mode, seconds = _due_argument(at, in_)
    client = redis or _default_redis(app)
    score = client.register_script(_SCHEDULE)(
        keys=[SCHEDULE_KEY, DISPATCHING_KEY], args=[eid, mode, repr(seconds)]
    )
    return _as_datetime(score)


def unschedule_cancel(
    external_id: Any, *, redis: redis_sync.Redis | None = None, app: Any = None
) -> bool:
    """Forget the scheduled cancellation of ``external_id``; ``False`` if none was waiting.

    A dispatch already under way may still cancel it.
    """
    eid = normalize_external_id(external_id)
    client = redis or _default_redis(app)
    script = client.register_script(_UNSCHEDULE)
    return bool(script(keys=[SCHEDULE_KEY, DISPATCHING_KEY], args=[eid]))


def scheduled(
    *, limit: int | None = None, redis: redis_sync.Redis | None = None, app: Any = None
) -> list[tuple[str, datetime]]:
    """The waiting ids with their due times, soonest first."""
    client = redis or _default_redis(app)
    stop = -1 if limit is None else limit - 1
    entries = client.zrange(SCHEDULE_KEY, 0, stop, withscores=True)
    return [(eid.decode(), _as_datetime(score)) for eid, score in entries]


# ---------------------------------------------------------------- dispatching


def claim_due(
    redis: redis_sync.Redis, *, limit: int = DISPATCH_BATCH, lease: float = LEASE
) -> list[str]:
    """Atomically take up to ``limit`` due ids (and ids whose lease expired) for dispatch."""
    script = redis.register_script(_CLAIM)
    claimed = script(keys=[SCHEDULE_KEY, DISPATCHING_KEY], args=[repr(float(lease)), limit])
    return [eid.decode() for eid in claimed]


def release(redis: redis_sync.Redis, external_ids: Iterable[str]) -> None:
    """The claimed ids reached the broker: their leases end."""
    ids = list(external_ids)
    if ids:
        redis.zrem(DISPATCHING_KEY, *ids)


@shared_task(bind=True, base=KrakenPayTask, name=task_name("dispatch_due"), ignore_result=True)
def dispatch_due(self: KrakenPayTask) -> int:
    """Send every due scheduled cancellation to ``bulk_cancel``; return how many."""
    client = _default_redis(self.app)
    record_heartbeat(client)  # `kraken-pay check` reads it: beat runs, a worker takes its tasks
    route = route_of(self.request)
    bulk_cancel = self.task("bulk_cancel")
    sent = 0
    while True:
        ids = claim_due(client, limit=DISPATCH_BATCH, lease=LEASE)
        if ids:
            bulk = bulk_cancel.apply_async((ids,), **route)
            release(client, ids)
            sent += len(ids)
            log.info(
                "dispatched scheduled cancellations count=%d bulk=%s",
                len(ids),
                bulk.id,
                extra={"event": "schedule.dispatched", "count": len(ids), "bulk": bulk.id},
            )
        if len(ids) < DISPATCH_BATCH:
            break
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
