"""Writing rows in the caller's transaction, and reconciling them with the Redis ledger.

The row is the durable intent; the Redis ledger (:mod:`tasks.ledger`) tracks the work. Beat's
relay takes the open rows whose deadline passed: one the Redis ledger closed is closed here
with its outcome, one it has at work gets a later deadline, and one it never heard of, or has
only scheduled for later (the web process died between its commit and the publish, or the
publish failed), is sent now.
A cancellation answered by ``cancel_request`` closes its row at once, on the worker.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import signals
from django.db import transaction
from django.utils import timezone

from kraken.pay import normalize_external_id
from tasks.base import task_name
from tasks.contrib.reconcile import closed_fields, decide, publish, resend_after
from tasks.ledger import ledger_for
from tasks.settings import settings_for

__all__ = ["connect", "relay_database", "request_cancellation"]

log = logging.getLogger("tasks.contrib.django_store")

BATCH = 1000  # rows per relay run
_CANCEL = task_name("cancel_request")


def _model() -> Any:
    from tasks.contrib.django_store.models import Cancellation

    return Cancellation


def request_cancellation(external_id: Any, *, using: str | None = None) -> Any:
    """Record the cancellation of ``external_id`` in the current transaction (the id is
    validated first), and queue ``cancel_request`` once that transaction commits."""
    eid = normalize_external_id(external_id)
    deadline = timezone.now() + timedelta(seconds=settings_for().ledger_grace)
    row, _ = (
        _model()
        .objects.using(using)
        .update_or_create(
            external_id=eid,
            defaults={"state": "open", "outcome": "", "deadline": deadline, "closed_at": None},
        )
    )
    transaction.on_commit(lambda: _publish(eid), using=using)
    return row


def _publish(eid: str) -> None:
    publish(eid)


def relay_database(task: Any) -> int:
    """Reconcile the open rows whose deadline passed; return how many were sent again."""
    Cancellation = _model()
    now = timezone.now()
    ledger = ledger_for(task.app)
    grace = task.settings.ledger_grace
    sent = 0
    with transaction.atomic():
        due = Cancellation.objects.select_for_update(skip_locked=True).filter(
            state=Cancellation.OPEN, deadline__lte=now
        )
        for row in due.order_by("deadline")[:BATCH]:
            decision = decide(ledger, row.external_id)
            if decision.action == "close":
                _set(row, closed_fields(decision.record or {}) | {"closed_at": now})
            elif decision.action == "wait":
                row.attempts, row.last_error = decision.attempts, decision.last_error
                row.deadline = now + timedelta(seconds=grace)
            else:
                task.task("cancel_request").delay(row.external_id)
                row.sends += 1
                row.deadline = now + timedelta(seconds=resend_after(grace, row.sends))
                sent += 1
            row.save()
    if sent:
        log.info("database relay sent count=%d", sent, extra={"event": "django_store.relay"})
    return sent


def _set(row: Any, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        setattr(row, name, value)


def _on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) != _CANCEL or not isinstance(result, dict):
        return
    fields = closed_fields(result) | {"closed_at": timezone.now()}
    _model().objects.filter(external_id=result.get("external_id"), state="open").update(**fields)


def connect() -> None:
    """Close rows as answers come (on the workers) and relay in beat's dispatch_due."""
    from tasks.schedule import register_relay

    signals.task_success.connect(_on_success, weak=False, dispatch_uid="kraken_pay_store")
    register_relay(relay_database)
