"""``kraken_pay.handle_callback`` on a real Redis: once per notification, a failing hook retried.

The task runs eagerly here (``apply``: retries run at once, in this process); the real
processes are tests/test_host_callbacks.py's.
"""

from __future__ import annotations

import sys
import uuid
from collections import Counter

import pytest
from webhook_support import claims

from kraken.pay.errors import ConfigurationError
from kraken.pay.webhooks import PayCallback
from kraken.pay.webhooks.callback import parse_claims
from tasks.callbacks import DONE_TTL, MAX_RETRIES, handle_callback, load_hook, notification_key
from tasks.settings import Settings

calls: Counter[tuple[str, str]] = Counter()
failures_left: dict[str, int] = {}


def record(callback: PayCallback) -> None:
    """The hook under test: counts its calls, raises while ``failures_left`` says so."""
    calls[(callback.external_id, callback.status)] += 1
    left = failures_left.get(callback.external_id, 0)
    if left:
        failures_left[callback.external_id] = left - 1
        raise RuntimeError("the shop's database is down")


not_callable = 42


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


def test_a_cancelled_notification_closes_our_cancellation_as_confirmed_by_kraken(
    settings, _ledger_in_fakeredis
):
    data = callback("cancelled")
    _ledger_in_fakeredis.ask([data["external_id"]], within=60, task_id="ours")
    assert run(data).get()["outcome"] == "handled"
    record = _ledger_in_fakeredis.closed(data["external_id"])
    assert (record["outcome"], record["confirmed_by_kraken"]) == ("cancelled", True)


def test_a_payment_made_while_we_were_cancelling_is_paid_meanwhile_and_the_hook_runs_once(
    settings, _ledger_in_fakeredis
):
    data = callback("success")
    _ledger_in_fakeredis.ask([data["external_id"]], within=60, task_id="ours")
    assert [run(data).get()["outcome"] for _ in range(3)] == ["handled", "duplicate", "duplicate"]
    record = _ledger_in_fakeredis.closed(data["external_id"])
    assert (record["outcome"], record["paid_meanwhile"]) == ("not_cancellable", True)
    assert calls == {(data["external_id"], "success"): 1}
    assert _ledger_in_fakeredis.entry(data["external_id"]) is None  # nothing left to send


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("no_such_module_xyz:hook", "cannot load 'no_such_module_xyz:hook': ModuleNotFoundError"),
        ("test_callbacks:missing", "cannot load 'test_callbacks:missing': AttributeError"),
        ("test_callbacks:not_callable", "'test_callbacks:not_callable' is not callable"),
    ],
)
def test_a_hook_that_cannot_be_loaded_is_refused_in_one_line(target, error):
    with pytest.raises(ConfigurationError) as caught:
        load_hook(target)
    assert str(caught.value) == f"KRAKEN_CALLBACK_HOOK: {error}"


def test_the_settings_refuse_a_hook_that_is_not_module_colon_function():
    with pytest.raises(ConfigurationError) as caught:
        Settings.resolve({"callback_hook": "shop.payments.on_status"})
    assert str(caught.value) == (
        "kraken_pay['callback_hook']: must be 'module:function', such as 'shop.payments:on_status'"
    )


def test_the_jwks_url_setting_defaults_to_krakens_and_refuses_other_schemes():
    assert Settings.resolve({}, {}).jwks_url == (
        "https://www.kraken.com/.well-known/pay-callback-keys.json"
    )
    with pytest.raises(ConfigurationError) as caught:
        Settings.resolve({}, {"KRAKEN_JWKS_URL": "file:///etc/keys.json"})
    assert str(caught.value) == "KRAKEN_JWKS_URL: must be a URL whose scheme is https or http"
    assert "test_callbacks" in sys.modules  # the hook module is this one


@pytest.mark.slow
@pytest.mark.parametrize(
    ("hook", "rule"),
    [
        ("no_such_module_xyz:hook", "cannot load 'no_such_module_xyz:hook': ModuleNotFoundError"),
        ("shop.payments.on_status", "must be 'module:function'"),
    ],
)
def test_a_worker_with_a_hook_it_cannot_load_refuses_to_start_in_one_line(hook, rule):
    from test_tasks_startup import refusal, start_worker

    from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET

    completed = start_worker(
        KRAKEN_API_KEY=DEMO_API_KEY, KRAKEN_API_SECRET=DEMO_API_SECRET, KRAKEN_CALLBACK_HOOK=hook
    )
    assert completed.returncode == 78
    assert f"KRAKEN_CALLBACK_HOOK: {rule}" in refusal(completed)
    assert "Traceback" not in completed.stderr


def test_the_demo_reports_the_cancellations_kraken_confirmed_and_a_shortfall_is_a_problem():
    from tasks.demo import Report, Tally

    stats = {"faults_injected": {}, "requests": 10, "nonce_rejections": 0}
    summary = {"by_state": {"cancelled": 10}}
    full = Report(Tally(sent=10, seconds=1.0), stats, summary, confirmed=10)
    assert ("confirmed by Kraken", "10 of 10 by webhook") in full.rows()
    assert full.problems() == []
    short = Report(Tally(sent=10, seconds=1.0), stats, summary, confirmed=7)
    assert short.problems() == ["3 cancellation(s) not confirmed by Kraken"]


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
