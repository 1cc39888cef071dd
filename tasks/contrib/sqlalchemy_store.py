"""The ledger in your own database, for SQLAlchemy (Flask and others): "the order is cancelled"
and "its payment request will be cancelled" are one commit.

Create the table (``metadata.create_all(engine)``, or in your migrations), and in the session
that cancels the order::

    from tasks.contrib.sqlalchemy_store import request_cancellation

    with Session(engine) as session, session.begin():
        order.status = "cancelled"
        request_cancellation(session, order.payment_external_id)

The row is written in the session's transaction; once it commits, ``cancel_request`` is
queued. Where the workers run, call ``connect(engine)`` once (in ``celery_init_app``): beat's
``dispatch_due`` then also sends the rows whose publish was lost, and answers close them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    event,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from kraken.pay import normalize_external_id
from tasks.base import task_name
from tasks.contrib.reconcile import closed_fields, decide, publish, resend_after
from tasks.ledger import ledger_for
from tasks.settings import settings_for

__all__ = ["cancellations", "connect", "metadata", "relay", "request_cancellation"]

log = logging.getLogger("tasks.contrib.sqlalchemy_store")

BATCH = 1000
metadata = MetaData()
cancellations = Table(
    "kraken_pay_cancellation",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("external_id", String(64), unique=True, nullable=False),
    Column("state", String(8), nullable=False, default="open"),  # open, closed, failed
    Column("outcome", String(32), nullable=False, default=""),
    Column("attempts", Integer, nullable=False, default=0),
    Column("sends", Integer, nullable=False, default=0),
    Column("last_error", String(200), nullable=False, default=""),
    Column("asked_at", DateTime(timezone=True), nullable=False),
    Column("deadline", DateTime(timezone=True), nullable=False, index=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def request_cancellation(session: Session, external_id: Any) -> None:
    """Record the cancellation of ``external_id`` in ``session``'s transaction (the id is
    validated first), and queue ``cancel_request`` once that transaction commits."""
    eid = normalize_external_id(external_id)
    now = _now()
    deadline = now + timedelta(seconds=settings_for().ledger_grace)
    table = cancellations
    found = session.execute(select(table.c.id).where(table.c.external_id == eid)).first()
    values = {"state": "open", "outcome": "", "deadline": deadline, "closed_at": None}
    if found:
        session.execute(update(table).where(table.c.id == found.id).values(**values))
    else:
        session.execute(table.insert().values(external_id=eid, asked_at=now, **values))
    event.listen(session, "after_commit", lambda _: _publish(eid), once=True)


def _publish(eid: str) -> None:
    publish(eid)


def relay(engine: Engine, task: Any) -> int:
    """Reconcile the open rows whose deadline passed; return how many were sent again."""
    ledger = ledger_for(task.app)
    grace = task.settings.ledger_grace
    now = _now()
    table = cancellations
    sent = 0
    with Session(engine) as session, session.begin():
        due = (
            select(table)
            .where(table.c.state == "open", table.c.deadline <= now)
            .order_by(table.c.deadline)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        for row in session.execute(due).all():
            decision = decide(ledger, row.external_id)
            if decision.action == "close":
                values = closed_fields(decision.record or {}) | {"closed_at": now}
            elif decision.action == "wait":
                values = {"attempts": decision.attempts, "last_error": decision.last_error}
                values["deadline"] = now + timedelta(seconds=grace)
            else:
                task.task("cancel_request").delay(row.external_id)
                delay = resend_after(grace, row.sends + 1)
                values = {"sends": row.sends + 1, "deadline": now + timedelta(seconds=delay)}
                sent += 1
            session.execute(update(table).where(table.c.id == row.id).values(**values))
    if sent:
        log.info("database relay sent count=%d", sent, extra={"event": "sqlalchemy_store.relay"})
    return sent


def connect(engine: Engine) -> None:
    """On the workers: relay this engine's rows in ``dispatch_due``, close them on answers."""
    from celery import signals

    from tasks.schedule import register_relay

    def relay_rows(task: Any) -> int:
        return relay(engine, task)

    def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
        if getattr(sender, "name", None) != task_name("cancel_request"):
            return
        if not isinstance(result, dict):
            return
        fields = closed_fields(result) | {"closed_at": _now()}
        with engine.begin() as connection:
            connection.execute(
                update(cancellations)
                .where(
                    cancellations.c.external_id == result.get("external_id"),
                    cancellations.c.state == "open",
                )
                .values(**fields)
            )

    register_relay(relay_rows)
    signals.task_success.connect(on_success, weak=False, dispatch_uid=f"kraken_pay_sa_{id(engine)}")
