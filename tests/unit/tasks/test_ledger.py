"""tasks/ledger.py and how the tasks use it, without workers (fakeredis, eager tasks)."""

from __future__ import annotations

import uuid

import fakeredis
import pytest
import redis
from celery import Celery
from tasks_support import pay_error

from kraken.pay import normalize_external_id
from kraken.pay.errors import TransportError
from tasks import KrakenPayTask
from tasks.celery import app
from tasks.embedded import redis_server
from tasks.ledger import Ledger, NotRecorded, ledger_for, override
from tasks.schedule import schedule_cancel
from tasks.settings import forget
from tasks.worker import persistence_warnings

EID = normalize_external_id(uuid.UUID(int=7))


@pytest.fixture
def ledger(_ledger_in_fakeredis) -> Ledger:
    return _ledger_in_fakeredis


def test_an_answer_closes_the_entry_and_keeps_the_record(scripted, ledger):
    scripted({})
    ledger.ask([EID], within=60, task_id="t")
    result = app.tasks["kraken_pay.cancel_request"].apply(args=(EID,)).get()
    assert result["outcome"] == "cancelled"
    assert ledger.entry(EID) is None
    assert ledger.closed(EID)["outcome"] == "cancelled"
    assert ledger.open_count() == 0


def test_a_message_for_an_answered_cancellation_does_not_call_kraken_again(scripted, ledger):
    client = scripted({}, {})
    task = app.tasks["kraken_pay.cancel_request"]
    first = task.apply(args=(EID,)).get()
    again = task.apply(args=(EID,)).get()  # a re-send, or a duplicate delivery
    assert client.calls == [EID]
    assert again["outcome"] == first["outcome"] == "cancelled"


def test_a_forged_retry_state_in_the_message_is_ignored(scripted, ledger):
    scripted(pay_error("RequestAlreadyCancelled"))
    task = app.tasks["kraken_pay.cancel_request"]
    result = task.apply(args=(EID,), kwargs={"_retry": {"ambiguous": True}}).get()
    assert (result["outcome"], result["confirmed_on_retry"]) == ("already_cancelled", False)


def test_the_ambiguity_of_an_attempt_reaches_the_retry_through_the_ledger(
    scripted, ledger, kraken_settings
):
    kraken_settings(retry_base_delay=0.001)
    scripted(
        TransportError("reset after sending", ambiguous=True), pay_error("RequestAlreadyCancelled")
    )
    result = (
        app.tasks["kraken_pay.cancel_request"].apply(args=(EID,)).get()
    )  # eager: retried inline
    assert (result["outcome"], result["confirmed_on_retry"]) == ("cancelled", True)
    assert ledger.closed(EID)["attempts"] == 2


def test_delay_returns_once_recorded_even_when_the_broker_is_down(ledger):
    task = app.tasks["kraken_pay.cancel_request"]
    saved = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    app._pool = None
    try:
        result = task.apply_async((EID,), retry=False)
    finally:
        app.conf.broker_url = saved
        app._pool = None
    entry = ledger.entry(EID)
    assert entry.task_id == result.id
    assert [e.external_id for e in ledger.claim_due(10, grace=60)] == [EID]  # due at once


def test_delay_raises_and_sends_nothing_when_nothing_could_be_recorded(monkeypatch):
    dead = Ledger(redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2))
    override(app, dead)
    sent = []
    monkeypatch.setattr(KrakenPayTask, "apply_async", lambda *a, **k: sent.append(a))
    with pytest.raises(NotRecorded, match="nothing was sent"):
        app.tasks["kraken_pay.cancel_request"].delay(EID)
    assert sent == []


def test_a_bad_id_in_a_chunk_fails_for_itself_alone(scripted, ledger, kraken_settings):
    kraken_settings(bulk_concurrency=2)
    scripted({})
    chunk = app.tasks["kraken_pay.cancel_chunk"]
    summary = chunk.apply(args=([EID, "not base64!"],)).get()
    assert summary["outcomes"]["cancelled"] == 1
    assert [item["error"].split(":")[0] for item in summary["failed"]] == ["InvalidExternalId"]
    assert ledger.closed(EID)["outcome"] == "cancelled"


def test_two_apps_sharing_a_redis_never_see_each_others_entries(redis_url):
    shared = redis.Redis.from_url(redis_url)
    apps = [Celery(name, set_as_current=False) for name in ("shop_a", "shop_b")]
    for name, each in zip(("a", "b"), apps, strict=True):
        each.conf.kraken_pay = {"redis_url": redis_url, "redis_prefix": f"test-{name}"}
    try:
        mine, theirs = normalize_external_id(uuid.uuid4()), normalize_external_id(uuid.uuid4())
        schedule_cancel(mine, in_=0, app=apps[0])
        schedule_cancel(theirs, in_=0, app=apps[1])
        a, b = ledger_for(apps[0]), ledger_for(apps[1])
        assert [e.external_id for e in a.claim_due(100, grace=60)] == [mine]
        assert [e.external_id for e in b.claim_due(100, grace=60)] == [theirs]
        assert shared.hget("kraken:ledger:open", mine) is None  # nothing under the default
        assert shared.hget("kraken:ledger:open", theirs) is None
    finally:
        for each in apps:
            forget(each)
        for key in shared.keys("test-[ab]:*"):
            shared.delete(key)
        shared.close()


def test_the_ledger_keys_are_all_under_the_prefix():
    client = fakeredis.FakeRedis()
    ledger = Ledger(client, "shop-7")
    ledger.ask([EID], within=0, task_id="t")
    ledger.begin([EID], 60)
    ledger.close([(EID, {"outcome": "cancelled"})])
    assert all(key.startswith(b"shop-7:") for key in client.keys("*"))


@pytest.mark.slow
def test_a_worker_warns_of_a_redis_that_would_lose_the_ledger():
    with redis_server(prefer="process") as url:  # a Redis of the test's own, no AOF
        client = redis.Redis.from_url(url)
        assert [w.split(":")[0] for w in persistence_warnings(url)] == ["REDIS_URL"]
        client.config_set("appendonly", "yes")
        assert persistence_warnings(url) == []
        client.config_set("maxmemory-policy", "allkeys-lru")
        (warning,) = persistence_warnings(url)
        assert "allkeys-lru" in warning
        client.close()


@pytest.mark.parametrize(
    ("before", "status", "answer", "outcome"),
    [
        ("open", "cancelled", "confirmed", "cancelled"),
        ("open", "expired", "confirmed", "expired"),
        ("closed", "cancelled", "confirmed", "cancelled"),
        ("open", "success", "paid_meanwhile", "not_cancellable"),
        ("not_cancellable", "success", "paid_meanwhile", "not_cancellable"),
        ("closed", "success", "conflict", "cancelled"),
    ],
)
def test_kraken_notifications_close_or_mark_the_entry(ledger, before, status, answer, outcome):
    ledger.ask([EID], within=60, task_id="t")
    if before != "open":
        kept = "cancelled" if before == "closed" else before
        ledger.close([(EID, {"outcome": kept, "attempts": 1})])
    assert ledger.confirm(EID, status) == answer
    record = ledger.closed(EID)
    assert ledger.entry(EID) is None
    assert (record["outcome"], record["kraken_status"]) == (outcome, status)
    assert record.get("confirmed_by_kraken", False) == (answer == "confirmed")
    assert record.get("paid_meanwhile", False) == (answer == "paid_meanwhile")


def test_a_notification_for_a_request_never_cancelled_changes_nothing(ledger):
    assert ledger.confirm(EID, "success") == "unknown"
    assert ledger.closed(EID) is None and ledger.entry(EID) is None


def test_our_answer_after_krakens_notification_keeps_what_kraken_said(ledger):
    ledger.ask([EID], within=60, task_id="t")
    assert ledger.confirm(EID, "success") == "paid_meanwhile"  # the notification came first
    ledger.close([(EID, {"outcome": "not_cancellable", "attempts": 1})])  # then our answer
    record = ledger.closed(EID)
    assert (record["outcome"], record["paid_meanwhile"]) == ("not_cancellable", True)
