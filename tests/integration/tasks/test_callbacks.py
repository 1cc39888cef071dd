"""``kraken_pay.handle_callback`` on a real Redis: once per notification, a failing hook retried.

The task runs eagerly here (``apply``: retries run at once, in this process); the examples'
real processes are integration/hosts/test_host_callbacks.py's.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from command_support import celery_worker, refusal
from webhook_support import claims

from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from kraken.pay.webhooks import PayCallback
from kraken.pay.webhooks.callback import parse_claims
from tasks.callbacks import DONE_TTL, MAX_RETRIES, handle_callback, notification_key

DEMO_KEY = {"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": DEMO_API_SECRET}

calls: Counter[tuple[str, str]] = Counter()
failures_left: dict[str, int] = {}


def record(callback: PayCallback) -> None:
    """The hook under test: counts its calls, raises while ``failures_left`` says so."""
    calls[(callback.external_id, callback.status)] += 1
    left = failures_left.get(callback.external_id, 0)
    if left:
        failures_left[callback.external_id] = left - 1
        raise RuntimeError("the shop's database is down")


@pytest.fixture
def settings(kraken_settings, redis_sync, redis_url):
    calls.clear()
    failures_left.clear()
    return kraken_settings(
        redis_url=redis_url,
        callback_hook="test_callbacks:record",
        retry_base_delay=0.001,
        retry_max_delay=0.001,
    )


def callback(status: str = "cancelled", eid: str | None = None) -> dict:
    eid = eid or uuid.uuid4().hex[:22]
    return parse_claims(claims(eid, status), now=None).to_dict()


def run(data: dict, task_id: str | None = None):
    return handle_callback.apply((data,), task_id=task_id or uuid.uuid4().hex)


def test_a_notification_calls_the_hook_once_and_is_remembered_for_days(settings, redis_sync):
    data = callback()
    first = run(data).get()
    assert first["outcome"] == "handled"
    assert run(data).get()["outcome"] == "duplicate"
    assert calls == {(data["external_id"], "cancelled"): 1}
    key = notification_key("kraken", data["notification_id"])
    assert redis_sync.get(key) == b"done"
    assert DONE_TTL - 60 < redis_sync.ttl(key) <= DONE_TTL
    assert key.startswith("kraken:")


def test_a_re_signed_repeat_is_a_duplicate_and_another_status_is_not(settings):
    data = callback("cancelled")
    again = parse_claims(claims(data["external_id"], "cancelled", exp=2_000_000_000), now=None)
    other = callback("expired", data["external_id"])
    assert run(data).get()["outcome"] == "handled"
    assert run(again.to_dict()).get()["outcome"] == "duplicate"
    assert run(other).get()["outcome"] == "handled"
    assert calls == {(data["external_id"], "cancelled"): 1, (data["external_id"], "expired"): 1}


def test_a_hook_that_fails_is_retried_until_it_succeeds_and_only_then_remembered(
    settings, redis_sync
):
    data = callback("success")
    failures_left[data["external_id"]] = 3
    assert run(data).get()["outcome"] == "handled"
    assert calls[(data["external_id"], "success")] == 4
    assert run(data).get()["outcome"] == "duplicate"
    assert calls[(data["external_id"], "success")] == 4


def test_a_hook_that_never_succeeds_gives_up_bounded_and_a_later_delivery_runs_it_again(
    settings, redis_sync
):
    data = callback("success")
    failures_left[data["external_id"]] = MAX_RETRIES + 1
    result = run(data)
    assert result.failed()
    assert isinstance(result.result, RuntimeError)
    assert calls[(data["external_id"], "success")] == MAX_RETRIES + 1
    assert redis_sync.get(notification_key("kraken", data["notification_id"])) is None  # released
    assert run(data).get()["outcome"] == "handled"  # Kraken's next delivery is not skipped
    assert calls[(data["external_id"], "success")] == MAX_RETRIES + 2


def test_while_one_task_holds_a_notification_another_delivery_is_a_duplicate(settings, redis_sync):
    data = callback()
    key = notification_key("kraken", data["notification_id"])
    redis_sync.set(key, "task:someone-else", ex=60)
    assert run(data).get()["outcome"] == "duplicate"
    assert not calls


def test_a_redelivered_task_that_holds_the_claim_runs_the_hook(settings, redis_sync):
    """A worker lost mid-hook: the message comes back with the same task id."""
    data = callback()
    redis_sync.set(notification_key("kraken", data["notification_id"]), "task:lost-one", ex=60)
    assert run(data, task_id="lost-one").get()["outcome"] == "handled"
    assert calls == {(data["external_id"], "cancelled"): 1}


def test_a_malformed_argument_fails_at_once_and_stores_nothing(settings, redis_sync):
    data = callback()
    data["claims"]["payload"]["status"] = "refunded"
    result = run(data)
    assert isinstance(result.result, ValueError)  # InvalidCallback, as the backend keeps it
    assert "payload.status" in str(result.result)
    assert redis_sync.dbsize() == 0
    assert not calls


def test_the_django_signal_is_sent_once_when_its_module_is_loaded(settings):
    from tasks.contrib.django import payment_status_changed

    seen = []

    def receiver(sender, callback, **_):
        seen.append((sender, callback.status))

    payment_status_changed.connect(receiver, weak=False)
    try:
        data = callback("expired")
        run(data).get()
        run(data).get()
    finally:
        payment_status_changed.disconnect(receiver)
    assert seen == [(PayCallback, "expired")]


def test_without_a_hook_the_task_still_de_duplicates(kraken_settings, redis_sync, redis_url):
    kraken_settings(redis_url=redis_url)
    data = callback()
    assert run(data).get()["outcome"] == "handled"
    assert run(data).get()["outcome"] == "duplicate"


def test_a_cancelled_notification_closes_our_cancellation_as_confirmed_by_kraken(settings, ledger):
    data = callback("cancelled")
    ledger.ask([data["external_id"]], within=60, task_id="ours")
    assert run(data).get()["outcome"] == "handled"
    record = ledger.closed(data["external_id"])
    assert (record["outcome"], record["confirmed_by_kraken"]) == ("cancelled", True)


def test_a_payment_made_while_we_were_cancelling_is_paid_meanwhile_and_the_hook_runs_once(
    settings, ledger
):
    data = callback("success")
    ledger.ask([data["external_id"]], within=60, task_id="ours")
    assert [run(data).get()["outcome"] for _ in range(3)] == ["handled", "duplicate", "duplicate"]
    record = ledger.closed(data["external_id"])
    assert (record["outcome"], record["paid_meanwhile"]) == ("not_cancellable", True)
    assert calls == {(data["external_id"], "success"): 1}
    assert ledger.entry(data["external_id"]) is None  # nothing left to send


@pytest.mark.parametrize(
    ("hook", "rule"),
    [
        ("no_such_module_xyz:hook", "cannot load 'no_such_module_xyz:hook': ModuleNotFoundError"),
        ("shop.payments.on_status", "must be 'module:function'"),
    ],
)
def test_a_worker_with_a_hook_it_cannot_load_refuses_to_start_in_one_line(hook, rule):
    completed = celery_worker("--loglevel", "INFO", **DEMO_KEY, KRAKEN_CALLBACK_HOOK=hook)
    assert completed.returncode == 78
    assert f"KRAKEN_CALLBACK_HOOK: {rule}" in refusal(completed)
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("argument", ["a string", None, ["a", "list"]])
def test_an_argument_that_is_not_an_object_is_refused_in_one_line(settings, redis_sync, argument):
    result = run(argument)
    assert isinstance(result.result, ValueError)
    assert str(result.result) == ("bad_claim: callback: must be an object (PayCallback.to_dict())")
    assert redis_sync.dbsize() == 0


def test_a_redis_that_does_not_answer_retries_before_any_hook_runs(kraken_settings):
    kraken_settings(
        redis_url="redis://127.0.0.1:1/0",  # nothing listens there
        callback_hook="test_callbacks:record",
        retry_base_delay=0.001,
        retry_max_delay=0.001,
    )
    calls.clear()
    result = run(callback())
    assert result.failed()
    assert "ConnectionError" in type(result.result).__name__
    assert not calls
