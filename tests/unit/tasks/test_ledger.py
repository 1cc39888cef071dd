"""tasks/ledger.py and how the tasks use it, without workers (fakeredis, eager tasks)."""

from __future__ import annotations

import uuid

import fakeredis
import pytest
import redis
from fake_client import pay_error

from kraken.pay import normalize_external_id
from kraken.pay.errors import TransportError
from tasks import KrakenPayTask
from tasks.celery import app
from tasks.ledger import Ledger, NotRecorded, override

EID = normalize_external_id(uuid.UUID(int=7))


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


def test_the_ledger_keys_are_all_under_the_prefix():
    client = fakeredis.FakeRedis()
    ledger = Ledger(client, "shop-7")
    ledger.ask([EID], within=0, task_id="t")
    ledger.begin([EID], 60)
    ledger.close([(EID, {"outcome": "cancelled"})])
    assert all(key.startswith(b"shop-7:") for key in client.keys("*"))


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
