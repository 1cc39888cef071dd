"""tasks/schedule.py without workers: the schedule in the ledger, the relay, the sweep."""

from __future__ import annotations

import sys
import types
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from kraken.pay import InvalidExternalId, normalize_external_id
from kraken.pay.errors import ConfigurationError
from tasks import schedule
from tasks.celery import app
from tasks.schedule import schedule_cancel, scheduled, unschedule_cancel

EID = "AAAAAAAAAAE"


@pytest.fixture
def sent(monkeypatch):
    """The ids the relay sent as bulk cancellations, one list per chord."""
    messages: list[list[str]] = []

    def bulk_signature(app, external_ids, chunk_size, **options):
        ids = list(external_ids)
        return types.SimpleNamespace(apply_async=lambda **_: messages.append(ids))

    def bulk_cancel(args, **options):  # what the sweep sends
        messages.append(list(args[0]))
        return types.SimpleNamespace(id=f"bulk-{len(messages)}")

    monkeypatch.setattr(schedule, "bulk_signature", bulk_signature)
    monkeypatch.setattr(app.tasks["kraken_pay.bulk_cancel"], "apply_async", bulk_cancel)
    return messages


def now() -> datetime:
    return datetime.now(timezone.utc)


def ids(n: int) -> list[str]:
    return [normalize_external_id(uuid.uuid4()) for _ in range(n)]


# ---------------------------------------------------------------- the schedule


def test_schedule_cancel_stores_the_canonical_id_with_its_due_time(ledger):
    due = now() + timedelta(hours=1)
    when = schedule_cancel(uuid.UUID(int=1), at=due, redis=ledger.redis)
    assert when == due
    assert scheduled(redis=ledger.redis) == [("AAAAAAAAAAAAAAAAAAAAAQ", due)]


def test_in_counts_from_the_clock_of_redis(ledger):
    before = now()
    when = schedule_cancel(EID, in_=timedelta(minutes=5), redis=ledger.redis)
    assert before + timedelta(minutes=5) <= when <= now() + timedelta(minutes=5)
    assert when.tzinfo is timezone.utc


def test_rescheduling_an_id_moves_it(ledger):
    schedule_cancel(EID, in_=60, redis=ledger.redis)
    later = now() + timedelta(days=1)
    schedule_cancel(EID, at=later, redis=ledger.redis)
    assert scheduled(redis=ledger.redis) == [(EID, later)]


def test_unschedule_cancel_removes_the_id(ledger):
    schedule_cancel(EID, in_=60, redis=ledger.redis)
    assert unschedule_cancel(EID, redis=ledger.redis) is True
    assert scheduled(redis=ledger.redis) == []
    assert unschedule_cancel(EID, redis=ledger.redis) is False


def test_scheduled_lists_soonest_first_up_to_a_limit(ledger):
    a, b, c = ids(3)
    for eid, minutes in ((a, 3), (b, 1), (c, 2)):
        schedule_cancel(eid, in_=timedelta(minutes=minutes), redis=ledger.redis)
    assert [eid for eid, _ in scheduled(redis=ledger.redis)] == [b, c, a]
    assert [eid for eid, _ in scheduled(limit=2, redis=ledger.redis)] == [b, c]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"at": datetime(2030, 1, 1)}, ValueError, "at: must be timezone-aware"),
        ({"at": "2030-01-01T00:00:00Z"}, TypeError, "at: must be a datetime"),
        ({"in_": timedelta(seconds=-1)}, ValueError, "in_: must be 0 or more"),
        ({"in_": "soon"}, TypeError, "in_: must be a timedelta or seconds"),
        ({}, TypeError, "exactly one of at= or in_="),
        ({"at": datetime.now(timezone.utc), "in_": 5}, TypeError, "exactly one of at= or in_="),
    ],
)
def test_a_bad_time_is_refused_and_nothing_is_stored(ledger, kwargs, error, message):
    with pytest.raises(error, match=message):
        schedule_cancel(EID, redis=ledger.redis, **kwargs)
    assert scheduled(redis=ledger.redis) == []


def test_a_bad_id_is_refused_and_nothing_is_stored(ledger):
    with pytest.raises(InvalidExternalId):
        schedule_cancel("not base64!", in_=0, redis=ledger.redis)
    with pytest.raises(InvalidExternalId):
        unschedule_cancel("not base64!", redis=ledger.redis)
    assert scheduled(redis=ledger.redis) == []


# ---------------------------------------------------------------- claiming due entries


def test_a_claim_takes_the_due_ids_and_none_early(ledger):
    due, later = ids(2)
    schedule_cancel(due, at=now() - timedelta(seconds=1), redis=ledger.redis)
    schedule_cancel(later, in_=timedelta(minutes=1), redis=ledger.redis)
    assert [e.external_id for e in ledger.claim_due(10, grace=60)] == [due]
    assert [eid for eid, _ in scheduled(redis=ledger.redis)] == [later]
    assert ledger.claim_due(10, grace=60) == []  # claimed once: a second relay finds nothing


def test_a_claim_that_no_worker_began_is_taken_again_once_its_lease_expires(ledger):
    schedule_cancel(EID, in_=0, redis=ledger.redis)
    assert [e.external_id for e in ledger.claim_due(10, grace=0)] == [EID]  # lost on the way
    assert [e.external_id for e in ledger.claim_due(10, grace=60)] == [EID]


def test_an_entry_a_worker_began_is_not_claimed_while_its_attempt_may_run(ledger):
    schedule_cancel(EID, in_=0, redis=ledger.redis)
    ledger.claim_due(10, grace=0)
    ledger.begin([EID], hold=60)
    assert ledger.claim_due(10, grace=60) == []


def test_a_claimed_id_on_its_way_is_not_pushed_back_by_rescheduling(ledger):
    schedule_cancel(EID, in_=0, redis=ledger.redis)
    ledger.claim_due(10, grace=0)  # sent: the entry is queued now, no longer scheduled
    schedule_cancel(EID, in_=timedelta(hours=1), redis=ledger.redis)
    assert ledger.entry(EID).state == "queued"
    assert [e.external_id for e in ledger.claim_due(10, grace=60)] == [EID]


def test_a_claim_takes_at_most_its_limit(ledger):
    for eid in ids(5):
        schedule_cancel(eid, in_=0, redis=ledger.redis)
    assert len(ledger.claim_due(3, grace=60)) == 3
    assert len(ledger.claim_due(3, grace=60)) == 2


def test_re_sent_entries_wait_longer_each_time(ledger):
    ledger.ask([EID], within=0, task_id="t")
    leases = []
    for _ in range(3):
        ledger.redis.zadd(ledger.due_key, {EID: 0})  # its deadline passed again
        ledger.claim_due(10, grace=10)
        leases.append(ledger.redis.zscore(ledger.due_key, EID) - float(ledger.redis.time()[0]))
    assert leases[0] < leases[1] < leases[2]


# ---------------------------------------------------------------- the relay


def test_the_relay_sends_the_due_ids_in_bulk(sent, ledger):
    due = ids(3)
    for eid in due:
        schedule_cancel(eid, in_=0, redis=ledger.redis)
    schedule_cancel(EID, in_=timedelta(hours=1), redis=ledger.redis)
    assert schedule.dispatch_due.apply().get() == 3
    assert [sorted(message) for message in sent] == [sorted(due)]
    assert [eid for eid, _ in scheduled(redis=ledger.redis)] == [EID]


def test_the_relay_sends_large_backlogs_in_batches(sent, ledger, monkeypatch):
    monkeypatch.setattr(schedule, "DISPATCH_BATCH", 2)
    for eid in ids(5):
        schedule_cancel(eid, in_=0, redis=ledger.redis)
    assert schedule.dispatch_due.apply().get() == 5
    assert [len(message) for message in sent] == [2, 2, 1]


def test_a_lost_cancel_request_is_sent_again_with_its_own_task_id(ledger, monkeypatch):
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(
        app.tasks["kraken_pay.cancel_request"],
        "apply_async",
        lambda args, task_id, **options: sent.append((args[0], task_id)),
    )
    ledger.ask([EID], within=0, task_id="the-callers-task")  # its message never arrived
    assert schedule.dispatch_due.apply().get() == 1
    assert sent == [(EID, "the-callers-task")]


def test_ids_whose_sending_failed_are_due_again_at_the_next_run(sent, ledger, monkeypatch):
    schedule_cancel(EID, in_=0, redis=ledger.redis)

    def broker_down(*args, **options):
        raise ConnectionError("broker unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(
            schedule,
            "bulk_signature",
            lambda *a, **k: types.SimpleNamespace(apply_async=broker_down),
        )
        assert schedule.dispatch_due.apply().get() == 0
    assert ledger.entry(EID) is not None
    schedule.dispatch_due.apply()
    assert sent == [[EID]]


# ---------------------------------------------------------------- the user's sweep


@pytest.fixture
def user_module(monkeypatch):
    module = types.ModuleType("shop_sweeps")
    module.abandoned = lambda: [EID, "not base64!"]
    module.nothing = lambda: []
    module.not_a_function = 42
    monkeypatch.setitem(sys.modules, "shop_sweeps", module)
    return module


@pytest.fixture
def use_sweep(kraken_settings):
    return lambda _monkeypatch, target: kraken_settings(pay_sweep=target)


def test_the_sweep_bulk_cancels_what_the_users_function_returns(
    sent, monkeypatch, user_module, use_sweep
):
    use_sweep(monkeypatch, "shop_sweeps:abandoned")
    assert schedule.sweep.apply().get() == 2
    assert sent == [[EID, "not base64!"]]  # bulk_cancel reports the bad one by position


def test_a_sweep_that_finds_nothing_sends_nothing(sent, monkeypatch, user_module, use_sweep):
    use_sweep(monkeypatch, "shop_sweeps:nothing")
    assert schedule.sweep.apply().get() == 0
    assert sent == []


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("shop_sweeps.abandoned", "must be 'module:function'"),
        ("no_such_module_here:f", "cannot load"),
        ("shop_sweeps:missing", "cannot load"),
        ("shop_sweeps:not_a_function", "is not callable"),
    ],
)
def test_a_bad_sweep_target_names_the_variable(user_module, target, message):
    with pytest.raises(ConfigurationError, match=f"^KRAKEN_PAY_SWEEP: .*{message}"):
        schedule.load_sweep(target)
