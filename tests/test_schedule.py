"""tasks/schedule.py without workers: the schedule in Redis, the claim, the dispatch, the sweep."""

from __future__ import annotations

import sys
import threading
import types
import uuid
from datetime import datetime, timedelta, timezone

import fakeredis
import pytest
import redis
from tasks_support import redis_db

from kraken.pay import InvalidExternalId, normalize_external_id
from kraken.pay.errors import ConfigurationError
from tasks import schedule
from tasks.celery import app
from tasks.schedule import (
    DISPATCHING_KEY,
    SCHEDULE_KEY,
    claim_due,
    release,
    schedule_cancel,
    scheduled,
    unschedule_cancel,
)

EID = "AAAAAAAAAAE"
SCHEDULE_DB = 11  # no worker of another test claims ids from this database


@pytest.fixture
def fake_redis():
    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def sent(monkeypatch, fake_redis):
    """The ids that reached ``bulk_cancel``, one list per message; Redis is ``fake_redis``."""
    messages: list[list[str]] = []
    monkeypatch.setattr(schedule, "_default_redis", lambda app=None: fake_redis)

    def send(args, **options):
        messages.append(args[0])
        return types.SimpleNamespace(id=f"bulk-{len(messages)}")

    monkeypatch.setattr(app.tasks["kraken_pay.bulk_cancel"], "apply_async", send)
    return messages


def now() -> datetime:
    return datetime.now(timezone.utc)


def ids(n: int) -> list[str]:
    return [normalize_external_id(uuid.uuid4()) for _ in range(n)]


# ---------------------------------------------------------------- the schedule


def test_schedule_cancel_stores_the_canonical_id_with_its_due_time(fake_redis):
    due = now() + timedelta(hours=1)
    when = schedule_cancel(uuid.UUID(int=1), at=due, redis=fake_redis)
    assert when == due
    assert scheduled(redis=fake_redis) == [("AAAAAAAAAAAAAAAAAAAAAQ", due)]


def test_in_counts_from_the_clock_of_redis(fake_redis):
    before = now()
    when = schedule_cancel(EID, in_=timedelta(minutes=5), redis=fake_redis)
    assert before + timedelta(minutes=5) <= when <= now() + timedelta(minutes=5)
    assert when.tzinfo is timezone.utc


def test_rescheduling_an_id_moves_it(fake_redis):
    schedule_cancel(EID, in_=60, redis=fake_redis)
    later = now() + timedelta(days=1)
    schedule_cancel(EID, at=later, redis=fake_redis)
    assert scheduled(redis=fake_redis) == [(EID, later)]


def test_unschedule_cancel_removes_the_id(fake_redis):
    schedule_cancel(EID, in_=60, redis=fake_redis)
    assert unschedule_cancel(EID, redis=fake_redis) is True
    assert scheduled(redis=fake_redis) == []
    assert unschedule_cancel(EID, redis=fake_redis) is False


def test_scheduled_lists_soonest_first_up_to_a_limit(fake_redis):
    a, b, c = ids(3)
    for eid, minutes in ((a, 3), (b, 1), (c, 2)):
        schedule_cancel(eid, in_=timedelta(minutes=minutes), redis=fake_redis)
    assert [eid for eid, _ in scheduled(redis=fake_redis)] == [b, c, a]
    assert [eid for eid, _ in scheduled(limit=2, redis=fake_redis)] == [b, c]


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
def test_a_bad_time_is_refused_and_nothing_is_stored(fake_redis, kwargs, error, message):
    with pytest.raises(error, match=message):
        schedule_cancel(EID, redis=fake_redis, **kwargs)
    assert scheduled(redis=fake_redis) == []


def test_a_bad_id_is_refused_and_nothing_is_stored(fake_redis):
    with pytest.raises(InvalidExternalId):
        schedule_cancel("not base64!", in_=0, redis=fake_redis)
    with pytest.raises(InvalidExternalId):
        unschedule_cancel("not base64!", redis=fake_redis)
    assert scheduled(redis=fake_redis) == []


# ---------------------------------------------------------------- claiming due ids


def test_a_claim_takes_the_due_ids_and_none_early(fake_redis):
    due, later = ids(2)
    schedule_cancel(due, at=now() - timedelta(seconds=1), redis=fake_redis)
    schedule_cancel(later, in_=timedelta(minutes=1), redis=fake_redis)
    assert claim_due(fake_redis) == [due]
    assert [eid for eid, _ in scheduled(redis=fake_redis)] == [later]
    assert claim_due(fake_redis) == []  # claimed once: a second dispatcher finds nothing


def test_a_claim_never_released_is_taken_again_once_its_lease_expires(fake_redis):
    schedule_cancel(EID, in_=0, redis=fake_redis)
    assert claim_due(fake_redis, lease=0) == [EID]  # its dispatcher dies here
    assert claim_due(fake_redis) == [EID]


def test_a_released_claim_is_never_dispatched_again(fake_redis):
    schedule_cancel(EID, in_=0, redis=fake_redis)
    release(fake_redis, claim_due(fake_redis, lease=0))
    assert claim_due(fake_redis) == []
    assert fake_redis.zcard(DISPATCHING_KEY) == 0


def test_rescheduling_a_claimed_id_drops_its_lease_so_it_is_not_sent_early(fake_redis):
    schedule_cancel(EID, in_=0, redis=fake_redis)
    claim_due(fake_redis, lease=0)  # its dispatcher dies here
    schedule_cancel(EID, in_=timedelta(hours=1), redis=fake_redis)
    assert claim_due(fake_redis) == []
    assert [eid for eid, _ in scheduled(redis=fake_redis)] == [EID]


def test_a_claim_takes_at_most_its_limit(fake_redis):
    for eid in ids(5):
        schedule_cancel(eid, in_=0, redis=fake_redis)
    assert len(claim_due(fake_redis, limit=3)) == 3
    assert len(claim_due(fake_redis, limit=3)) == 2


def test_two_dispatchers_racing_on_real_redis_claim_each_id_once(redis_url):
    client = redis.Redis.from_url(redis_db(redis_url, SCHEDULE_DB))
    client.delete(SCHEDULE_KEY, DISPATCHING_KEY)
    everything = ids(2000)
    for eid in everything:
        schedule_cancel(eid, in_=0, redis=client)
    claims: list[list[str]] = [[], []]
    start = threading.Barrier(2)

    def dispatcher(mine: list[str]) -> None:
        own = redis.Redis.from_url(redis_db(redis_url, SCHEDULE_DB))
        start.wait()
        while batch := claim_due(own, limit=50):
            mine.extend(batch)
            release(own, batch)
        own.close()

    threads = [threading.Thread(target=dispatcher, args=(mine,)) for mine in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(claims)  # both took part
    assert sorted(claims[0] + claims[1]) == sorted(everything)
    client.close()


# ---------------------------------------------------------------- dispatch_due


def test_dispatch_due_sends_the_due_ids_to_bulk_cancel_and_releases_them(sent, fake_redis):
    due = ids(3)
    for eid in due:
        schedule_cancel(eid, in_=0, redis=fake_redis)
    schedule_cancel(EID, in_=timedelta(hours=1), redis=fake_redis)
    assert schedule.dispatch_due.apply().get() == 3
    assert [sorted(message) for message in sent] == [sorted(due)]
    assert fake_redis.zcard(DISPATCHING_KEY) == 0
    assert [eid for eid, _ in scheduled(redis=fake_redis)] == [EID]


def test_dispatch_due_sends_large_backlogs_in_batches(sent, fake_redis, monkeypatch):
    monkeypatch.setattr(schedule, "DISPATCH_BATCH", 2)
    for eid in ids(5):
        schedule_cancel(eid, in_=0, redis=fake_redis)
    assert schedule.dispatch_due.apply().get() == 5
    assert [len(message) for message in sent] == [2, 2, 1]


def test_ids_whose_sending_failed_stay_claimed_and_go_with_a_later_run(
    sent, fake_redis, monkeypatch
):
    schedule_cancel(EID, in_=0, redis=fake_redis)

    def broker_down(args, **options):
        raise ConnectionError("broker unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(app.tasks["kraken_pay.bulk_cancel"], "apply_async", broker_down)
        patch.setattr(schedule, "LEASE", 0.0)
        assert schedule.dispatch_due.apply().failed()
    assert fake_redis.zscore(DISPATCHING_KEY, EID) is not None
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
