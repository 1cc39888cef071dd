"""tasks.contrib.sqlalchemy_store on SQLite and PostgreSQL: the row is written in the caller's
session, queued only after its commit, and the relay sends what was committed but not sent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session

from kraken.pay import normalize_external_id
from tasks.celery import app
from tasks.contrib import sqlalchemy_store
from tasks.contrib.sqlalchemy_store import cancellations, request_cancellation

POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path) -> Iterator:
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'shop.sqlite3'}")
        name = None
    else:
        name = f"store_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    sqlalchemy_store.metadata.create_all(engine)
    yield engine
    engine.dispose()
    if name:
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def queued(monkeypatch) -> list[str]:
    """The ids handed to ``cancel_request.delay``."""
    sent: list[str] = []
    monkeypatch.setattr(app.tasks["kraken_pay.cancel_request"], "delay", sent.append)
    return sent


def new_id() -> str:
    return normalize_external_id(uuid.uuid4())


def row(engine, eid: str):
    with engine.connect() as connection:
        found = cancellations.c.external_id == eid
        return connection.execute(select(cancellations).where(found)).first()


def test_the_row_is_written_in_the_callers_transaction_and_queued_after_commit(engine, queued):
    eid = new_id()
    with Session(engine) as session, session.begin():
        request_cancellation(session, eid)
        assert queued == []  # not before the commit
    assert queued == [eid]
    assert row(engine, eid).state == "open"


def test_a_rolled_back_transaction_records_and_queues_nothing(engine, queued):
    eid = new_id()
    with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
        request_cancellation(session, eid)
        raise RuntimeError("the order's change failed")
    assert queued == []
    assert row(engine, eid) is None


def test_the_relay_sends_a_committed_row_whose_publish_was_lost(engine, queued):
    eid = new_id()
    with Session(engine) as session, session.begin():
        request_cancellation(session, eid)
    queued.clear()  # as if the process died before the publish reached the broker
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    with engine.begin() as connection:
        connection.execute(update(cancellations).values(deadline=past))
    task = app.tasks["kraken_pay.dispatch_due"]
    assert sqlalchemy_store.relay(engine, task) == 1
    assert queued == [eid]
    assert row(engine, eid).sends == 1
    assert sqlalchemy_store.relay(engine, task) == 0  # its new deadline is ahead


def test_the_relay_closes_a_row_the_ledger_has_an_answer_for(engine, queued, ledger):
    eid = new_id()
    with Session(engine) as session, session.begin():
        request_cancellation(session, eid)
    ledger.close([(eid, {"outcome": "cancelled", "attempts": 1})])
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    with engine.begin() as connection:
        connection.execute(update(cancellations).values(deadline=past))
    assert sqlalchemy_store.relay(engine, app.tasks["kraken_pay.dispatch_due"]) == 0
    closed = row(engine, eid)
    assert (closed.state, closed.outcome, closed.attempts) == ("closed", "cancelled", 1)
